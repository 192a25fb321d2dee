"""Where a replay stands, kept in a file so an interrupted replay continues from there.

The position is the merge's (``read/merge.py``): for each segment it has read from, how many
of its lines are done (sent, or skipped by the filters). Saved only once the target has taken
every record before it, so a replay killed at any moment and resumed sends each record at
least once and skips none; a replay never interrupted sends each exactly once. The file is
replaced whole (written aside, fsynced, renamed): a kill leaves the old one or the new one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

VERSION = 1


class CheckpointError(Exception):
    """A resume file that belongs to another replay, or that cannot be read."""


@dataclass
class Checkpoint:
    """``query``: a digest of what the replay was asked (archive, target, filters), so one
    replay's file is never taken for another's; ``since``/``until`` as first resolved, so an
    age such as ``2h`` means the same records when resumed later."""

    query: str
    since: str | None
    until: str | None
    positions: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    complete: bool = False

    def to_json(self) -> bytes:
        document = {"version": VERSION, **self.__dict__}
        return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def load(path: Path, query: str) -> Checkpoint | None:
    """The checkpoint in ``path`` (None when there is none yet), refused when it was written
    for another query."""
    try:
        document: dict[str, Any] = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read the resume file {path}: {err}") from None
    if document.get("version") != VERSION:
        raise CheckpointError(f"{path} has resume file version {document.get('version')!r}, not {VERSION}")
    if document.get("query") != query:
        raise CheckpointError(f"{path} is the resume file of another replay (other archive, target or filters)")
    document.pop("version")
    return Checkpoint(**document)


def save(path: Path, checkpoint: Checkpoint) -> None:
    """Replace ``path`` with ``checkpoint``, durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(path.name + ".tmp")
    with open(aside, "wb") as out:
        out.write(checkpoint.to_json())
        out.flush()
        os.fsync(out.fileno())
    os.replace(aside, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
