"""``python -m archiver``: the same as the ``archiver`` command."""

from archiver.app.cli import main

main()
