"""A command's stderr is its own: importing archiver prints no warning about its dependencies
(fs imports pkg_resources, which setuptools 81, as Python 3.12 and 3.13 venvs get it, deprecates
at import; `make test-3.12` and `make test-3.13` run this)."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_store_prints_nothing() -> None:
    result = subprocess.run([sys.executable, "-c", "import archiver.store"], capture_output=True, check=True)
    assert result.stderr == b""
