"""Failpoints: named places where a test can make the process die on purpose.

``ARCHIVER_FAILPOINTS=after-upload-put`` kills the sink with SIGKILL right after that step, so
tests can prove the crash-safety of an exact moment instead of hoping a random kill lands
there. Unset in production; checking costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    if name in os.environ.get("ARCHIVER_FAILPOINTS", "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)
