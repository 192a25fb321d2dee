"""The sink's own record of its segments: ``DATA/manifest.sqlite`` (WAL, mode 0600).

One connection per thread: the sealer thread writes, readers and the CLI open their own.
The schema is versioned with ``PRAGMA user_version`` and migrated forward on open; a file
from a newer archiver is refused rather than misread.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import orjson

SCHEMA_VERSION = 1
_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE segments (
        id           TEXT PRIMARY KEY,          -- <start>-<sink-id>-<seq>
        stream       TEXT NOT NULL,
        state        TEXT NOT NULL,             -- sealed (then uploaded, verified, pruned)
        local_path   TEXT NOT NULL,             -- relative to the data dir
        compression  TEXT NOT NULL,             -- gzip | zstd
        raw_bytes    INTEGER NOT NULL,          -- JSON-lines bytes before compression
        stored_bytes INTEGER NOT NULL,          -- bytes of the sealed file
        sha256       TEXT NOT NULL,             -- of the sealed file's bytes
        records      INTEGER NOT NULL,
        first_ts     TEXT,                      -- earliest record ts (not the first line's)
        last_ts      TEXT,                      -- latest record ts
        levels       TEXT NOT NULL,             -- JSON object: level -> count
        sealed_at    TEXT NOT NULL
    );
    CREATE INDEX segments_stream_time ON segments (stream, first_ts, last_ts);
    """,
}


class ManifestError(RuntimeError):
    """The manifest cannot be used (newer schema, unreadable file)."""


@dataclass(frozen=True)
class SegmentRow:
    """One sealed segment as the manifest knows it."""

    id: str
    stream: str
    state: str
    local_path: str
    compression: str
    raw_bytes: int
    stored_bytes: int
    sha256: str
    records: int
    first_ts: str | None
    last_ts: str | None
    levels: dict[str, int]
    sealed_at: str

    @classmethod
    def from_sql(cls, row: sqlite3.Row) -> "SegmentRow":
        values = dict(row)
        values["levels"] = orjson.loads(values["levels"])
        return cls(**values)


class Manifest:
    """A connection to ``manifest.sqlite``; create one per thread."""

    FILENAME = "manifest.sqlite"

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / self.FILENAME
        if not self.path.exists():
            # Created 0600 before SQLite touches it: it will hold write caps (#4).
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._migrate()

    def _migrate(self) -> None:
        for target in range(1, SCHEMA_VERSION + 1):
            self._db.execute("BEGIN IMMEDIATE")  # another process may be migrating too
            try:
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise ManifestError(
                        f"{self.path} has schema version {version}; this archiver knows up to "
                        f"{SCHEMA_VERSION}: upgrade archiver"
                    )
                if version < target:
                    for statement in _MIGRATIONS[target].split(";"):
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {target}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self._db.close()

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def add_sealed(self, row: SegmentRow) -> None:
        """Insert or replace: resealing after a crash rewrites the same segment id, never a second."""
        values: dict[str, Any] = dict(row.__dict__)
        values["levels"] = orjson.dumps(row.levels).decode()
        columns = ", ".join(values)
        marks = ", ".join(f":{name}" for name in values)
        self._db.execute(f"INSERT OR REPLACE INTO segments ({columns}) VALUES ({marks})", values)

    def segments(
        self, stream: str | None = None, since: str | None = None, until: str | None = None
    ) -> Iterator[SegmentRow]:
        """Segments whose time range overlaps [since, until), oldest first."""
        query = "SELECT * FROM segments WHERE 1=1"
        params: list[Any] = []
        if stream is not None:
            query += " AND stream = ?"
            params.append(stream)
        if since is not None:
            query += " AND last_ts >= ?"
            params.append(since)
        if until is not None:
            query += " AND first_ts < ?"
            params.append(until)
        query += " ORDER BY first_ts, id"
        for row in self._db.execute(query, params):
            yield SegmentRow.from_sql(row)

    def segment_ids(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT id FROM segments")]
