"""Failpoints: named places where a test can make the process misbehave on purpose.

``ARCHIVER_FAILPOINTS`` is a comma-separated list of ``name`` or ``name=action``:

- ``kill`` (the default): SIGKILL this process right there;
- ``sleep:SECONDS``: stall that step (widens a race window so a test hits it every time);
- ``fail``: raise :class:`FailpointError` every time; ``fail-once``: only the first time.

So tests prove the behaviour of an exact moment instead of hoping a random kill or a slow disk
lands there. Unset in production; checking costs one dictionary lookup.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time

_fired: set[str] = set()
_fired_lock = threading.Lock()


class FailpointError(RuntimeError):
    """Raised by a ``fail`` or ``fail-once`` failpoint."""


@functools.lru_cache(maxsize=8)
def _parse(spec: str) -> dict[str, str]:
    actions = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        actions[name] = action or "kill"
    return actions


def failpoint(name: str) -> None:
    """Do what ``ARCHIVER_FAILPOINTS`` asks at ``name``, if anything."""
    action = _parse(os.environ.get("ARCHIVER_FAILPOINTS", "")).get(name)
    if action is None:
        return
    kind, _, argument = action.partition(":")
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "sleep":
        time.sleep(float(argument))
    elif kind == "fail":
        raise FailpointError(f"failpoint {name}")
    elif kind == "fail-once":
        with _fired_lock:
            first = name not in _fired
            _fired.add(name)
        if first:
            raise FailpointError(f"failpoint {name} (once)")
    else:
        raise ValueError(f"unknown failpoint action {action!r} for {name}")
