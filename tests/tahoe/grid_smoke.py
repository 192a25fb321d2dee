"""A one-node grid from the Tahoe at ARCHIVER_TAHOE answers its web API and stores a file.

Run by `make tahoe-check-3.12` and `make tahoe-check-3.13`: the Tahoe venv built with that
Python (3.13 has no cgi module) must start and serve, not only install. Exits non-zero on any
failure.
"""

from __future__ import annotations

import io
import sys
import tempfile

import requests

from archiver.app.grid import LocalGrid


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="grid-smoke-") as directory:
        grid = LocalGrid.create(directory, nodes=1, needed=1, happy=1, total=1)
        grid.start()
        try:
            welcome = requests.get(grid.gateway_url + "/?t=json", timeout=30)
            welcome.raise_for_status()
            root = grid.create_root()
            root.upload("/smoke.txt", io.BytesIO(b"it answers\n"))
            assert root.readbytes("/smoke.txt") == b"it answers\n"
            print(f"tahoe at {grid.tahoe}: web API answers, a file went in and came back out")
        finally:
            grid.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
