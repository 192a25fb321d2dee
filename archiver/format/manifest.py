"""The sink's own record: ``DATA/manifest.sqlite`` (WAL, mode 0600).

Segments with their state (sealed -> uploaded -> verified -> pruned; retention may move any of
them to forgotten, which is final), the directories the sink created in the store with their
write and read caps (the manifest of directory URIs), when each object's lease was renewed,
which closed published file lists each row, the root caps and the sink id. One connection per thread. The schema is versioned with
``PRAGMA user_version`` and migrated forward when the sink opens it; a file from a newer
archiver is refused. Readers (``ls``, ``cat``, ``verify``, ``/_status``) open it read-only
(:func:`open_for_reading`): no write transaction, no lock contention with the sink, and it
works on a data dir they cannot write.

What is published to the store (READ caps only) is archiver/format/published.py's format 2,
written by archiver/ship/publisher.py from the rows :meth:`Manifest.unpublished` gives.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import orjson

SCHEMA_VERSION = 8
# The oldest schema a reader uses as it is: later versions added only what readers never read
# (8: the imports table), so a read-only reader need not wait for the sink to migrate.
READER_MIN_VERSION = 7
EXPORT_VERSION = 1
STATES = ("sealed", "uploaded", "verified", "pruned", "forgotten")
FORGOTTEN_PENDING = "forgotten; its stored file and local copy not yet removed"
DIRS_ROOT = "dirs_root"  # meta: sha256 naming the store root the dirs table belongs to
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
    2: """
    ALTER TABLE segments ADD COLUMN store_path   TEXT;     -- path under the store root
    ALTER TABLE segments ADD COLUMN read_cap     TEXT;     -- Tahoe read cap of the stored file
    ALTER TABLE segments ADD COLUMN verify_cap   TEXT;
    ALTER TABLE segments ADD COLUMN attempts     INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE segments ADD COLUMN last_error   TEXT;     -- capabilities redacted
    ALTER TABLE segments ADD COLUMN next_attempt REAL NOT NULL DEFAULT 0;  -- epoch seconds
    ALTER TABLE segments ADD COLUMN uploaded_at  TEXT;
    ALTER TABLE segments ADD COLUMN verified_at  TEXT;
    ALTER TABLE segments ADD COLUMN pruned_at    TEXT;
    ALTER TABLE segments ADD COLUMN health       TEXT;     -- JSON summary of the last check
    CREATE INDEX segments_state ON segments (state, next_attempt);
    CREATE TABLE dirs (
        path       TEXT PRIMARY KEY,                     -- under the store root, '/' separated
        write_cap  TEXT,                                 -- NULL for stores without caps
        read_cap   TEXT,
        created_at TEXT NOT NULL
    );
    """,
    3: """
    CREATE INDEX segments_time ON segments (last_ts, first_ts);
    """,
    4: """
    CREATE TABLE leases (
        target     TEXT PRIMARY KEY,    -- the cap a lease was added through, or 'path:' + store path
        renewed_at REAL NOT NULL        -- epoch seconds of the last renewal
    );
    """,
    5: """
    ALTER TABLE segments ADD COLUMN published_seq INTEGER;  -- the closed manifest file listing it (format 2)
    ALTER TABLE segments ADD COLUMN tombstone_seq INTEGER;  -- the closed file saying it was forgotten
    ALTER TABLE dirs ADD COLUMN published_seq INTEGER;
    CREATE INDEX segments_unpublished ON segments (published_seq) WHERE published_seq IS NULL;
    """,
    6: """
    ALTER TABLE segments ADD COLUMN forgotten_at     TEXT;  -- when retention forgot it (state forgotten)
    ALTER TABLE segments ADD COLUMN forgotten_reason TEXT;  -- the policy's reason
    """,
    7: """
    ALTER TABLE dirs ADD COLUMN frozen_at TEXT;  -- made immutable then (write_cap NULL, read_cap the frozen one's)
    """,
    8: """
    CREATE TABLE imports (
        fingerprint TEXT PRIMARY KEY,   -- sha256 hex of the file's first head_bytes decompressed bytes
        head_bytes  INTEGER NOT NULL,   -- 1024, or fewer for a file shorter than that
        path        TEXT NOT NULL,      -- where it was last read
        offset      INTEGER NOT NULL,   -- decompressed bytes imported: whole records, all durable
        records     INTEGER NOT NULL,
        rejected    INTEGER NOT NULL,
        pending     TEXT,               -- JSON: segments a batch is being appended to, and their sizes before
        updated_at  TEXT NOT NULL
    );
    """,
}
SEALED_COLUMNS = (
    "id", "stream", "state", "local_path", "compression", "raw_bytes", "stored_bytes", "sha256",
    "records", "first_ts", "last_ts", "levels", "sealed_at",
)


HEAD_BYTES = 1024  # how much of a file's decompressed start names it for archiver import


def file_fingerprint(head: bytes) -> str:
    """What an imported file is known by: the sha256 of its first bytes (at most HEAD_BYTES,
    decompressed), so a renamed or recompressed file is the same file."""
    return hashlib.sha256(head).hexdigest()


@dataclass(frozen=True)
class ImportPosition:
    """How far a file was imported. ``known`` is the fingerprint the manifest has it under:
    a file shorter than HEAD_BYTES when last read is found by its shorter start, and re-keyed
    by its current ``fingerprint`` when saved."""

    fingerprint: str
    head_bytes: int
    offset: int = 0
    records: int = 0
    rejected: int = 0
    known: str | None = None


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
    store_path: str | None = None
    read_cap: str | None = None
    verify_cap: str | None = None
    attempts: int = 0
    last_error: str | None = None
    next_attempt: float = 0.0
    uploaded_at: str | None = None
    verified_at: str | None = None
    pruned_at: str | None = None
    health: str | None = None
    published_seq: int | None = None
    tombstone_seq: int | None = None
    forgotten_at: str | None = None
    forgotten_reason: str | None = None

    @classmethod
    def from_sql(cls, row: sqlite3.Row) -> "SegmentRow":
        values = dict(row)
        values["levels"] = orjson.loads(values["levels"])
        return cls(**values)


# SQLite reads our ISO-8601 times ("...Z") directly: as epoch seconds.
_EPOCH = "(julianday({}) - 2440587.5) * 86400.0"


@dataclass(frozen=True)
class LeaseTarget:
    """One object in the store whose lease must be renewed: by ``cap`` (its read cap: adding a
    lease needs no write cap), or by ``path`` for a file whose cap changes."""

    kind: str  # segment | dir | root | published
    name: str
    cap: str | None
    path: str | None
    renewed_at: float

    @property
    def key(self) -> str:
        return self.cap if self.cap is not None else f"path:{self.path}"


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection. In WAL mode SQLite needs the ``-shm`` file, which a running (or
    killed) sink leaves beside the database; only a data dir closed cleanly has neither ``-shm``
    nor ``-wal``, and then nothing can be pending in a WAL, so on a directory we cannot write
    the file is opened as immutable."""
    if not path.exists():
        raise ManifestError(f"{path} does not exist")
    uri = "file:" + urllib.parse.quote(str(path))
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30, isolation_level=None)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError as err:
        db.close()
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size:
            raise ManifestError(
                f"cannot read {path}: {err}; its -wal holds changes, and without a -shm file beside it "
                "a read-only reader cannot see them (open it once with write access)"
            ) from None
    return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)


def open_for_reading(data_dir: Path) -> "Manifest":
    """The manifest for a reader: read-only, so readers never take the sink's write lock. A
    file written by an older archiver is migrated first when we may write it; otherwise its
    missing columns would break the reader."""
    manifest = Manifest(data_dir, read_only=True)
    if manifest.schema_version >= READER_MIN_VERSION:
        return manifest
    manifest.close()
    if not os.access(Path(data_dir) / Manifest.FILENAME, os.W_OK) or not os.access(data_dir, os.W_OK):
        raise ManifestError(
            f"{Path(data_dir) / Manifest.FILENAME} was written by an older archiver; start the sink on it "
            "once (or read it once with write access) to migrate it"
        )
    return Manifest(data_dir)


class Manifest:
    """A connection to ``manifest.sqlite``; create one per thread."""

    FILENAME = "manifest.sqlite"

    def __init__(self, data_dir: Path, *, read_only: bool = False) -> None:
        self.path = Path(data_dir) / self.FILENAME
        self.read_only = read_only
        if read_only:
            self._db = _connect_read_only(self.path)
            self._db.row_factory = sqlite3.Row
            self.schema_version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if self.schema_version > SCHEMA_VERSION:
                self._db.close()
                raise ManifestError(self._too_new(self.schema_version))
            return
        if not self.path.exists():
            # Created 0600 before SQLite touches it: it will hold write caps (#4).
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            self._migrate()
        except BaseException:
            self._db.close()
            raise
        self.schema_version = SCHEMA_VERSION

    def _migrate(self) -> None:
        for target in range(1, SCHEMA_VERSION + 1):
            self._db.execute("BEGIN IMMEDIATE")  # another process may be migrating too
            try:
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise ManifestError(self._too_new(version))
                if version < target:
                    for statement in _MIGRATIONS[target].split(";"):
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {target}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _too_new(self, version: int) -> str:
        return f"{self.path} has schema version {version}; this archiver knows up to {SCHEMA_VERSION}: upgrade archiver"

    def close(self) -> None:
        self._db.close()

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def add_sealed(self, row: SegmentRow) -> None:
        """An upsert: resealing after a crash rewrites the same segment id, never a second,
        and keeps whatever the uploader already recorded (the sealed bytes are identical)."""
        values: dict[str, Any] = {name: getattr(row, name) for name in SEALED_COLUMNS}
        values["levels"] = orjson.dumps(row.levels).decode()
        columns = ", ".join(SEALED_COLUMNS)
        marks = ", ".join(f":{name}" for name in SEALED_COLUMNS)
        updates = ", ".join(f"{name} = excluded.{name}" for name in SEALED_COLUMNS if name not in ("id", "state"))
        self._db.execute(
            f"INSERT INTO segments ({columns}) VALUES ({marks}) ON CONFLICT(id) DO UPDATE SET {updates}", values
        )

    def update_segment(self, segment: str, **changes: Any) -> bool:
        """Set columns of one segment (state transitions, upload results, errors). A forgotten
        segment is left alone, so a job that read the row before it was forgotten cannot bring
        it back; False then."""
        if "state" in changes and changes["state"] not in STATES:
            raise ValueError(f"unknown segment state {changes['state']!r}")
        assignments = ", ".join(f"{name} = :{name}" for name in changes)
        cursor = self._db.execute(
            f"UPDATE segments SET {assignments} WHERE id = :id AND state != 'forgotten'", {**changes, "id": segment}
        )
        return cursor.rowcount > 0

    def forget(self, segment: str, reason: str, when: str) -> SegmentRow | None:
        """Mark one segment forgotten, in a write transaction of its own: the row as it was, or
        None when it is unknown or already forgotten. Its ``last_error`` says what is left to
        remove (the stored file, the local copy) until :meth:`removed` clears it, so a run that
        stops halfway is finished by the next; its lease is no longer renewed."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            found = self._db.execute("SELECT * FROM segments WHERE id = ?", (segment,)).fetchone()
            if found is None or found["state"] == "forgotten":
                self._db.execute("ROLLBACK")
                return None
            self._db.execute(
                "UPDATE segments SET state = 'forgotten', forgotten_at = ?, forgotten_reason = ?, last_error = ? "
                "WHERE id = ?",
                (when, reason, FORGOTTEN_PENDING, segment),
            )
            if found["read_cap"] is not None:
                self._db.execute("DELETE FROM leases WHERE target = ?", (found["read_cap"],))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return SegmentRow.from_sql(found)

    def forgotten_unremoved(self) -> list[SegmentRow]:
        """Forgotten segments whose stored file or local copy may still be there."""
        query = "SELECT * FROM segments WHERE state = 'forgotten' AND last_error IS NOT NULL ORDER BY id"
        return [SegmentRow.from_sql(row) for row in self._db.execute(query)]

    def removed(self, segment: str, error: str | None = None) -> None:
        """A forgotten segment's files are gone (``error``: not yet, and why)."""
        self._db.execute(
            "UPDATE segments SET last_error = ? WHERE id = ? AND state = 'forgotten'", (error, segment)
        )

    def in_state(self, state: str, due_before: float | None = None) -> list[SegmentRow]:
        """Segments in ``state`` (and due for an attempt by ``due_before``), oldest first."""
        query = "SELECT * FROM segments WHERE state = ?"
        params: list[Any] = [state]
        if due_before is not None:
            query += " AND next_attempt <= ?"
            params.append(due_before)
        return [SegmentRow.from_sql(row) for row in self._db.execute(query + " ORDER BY id", params)]

    def streams(self) -> list[str]:
        query = "SELECT DISTINCT stream FROM segments WHERE state != 'forgotten' ORDER BY stream"
        return [row[0] for row in self._db.execute(query)]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        counts.update(self._db.execute("SELECT state, count(*) FROM segments GROUP BY state").fetchall())
        return counts

    def backlog_bytes(self) -> int:
        """Bytes sealed but not yet uploaded."""
        row = self._db.execute("SELECT coalesce(sum(stored_bytes), 0) FROM segments WHERE state = 'sealed'")
        return int(row.fetchone()[0])

    def last_event(self) -> dict[str, Any]:
        """The latest upload and the latest error, for status."""
        upload = self._db.execute("SELECT max(uploaded_at) FROM segments").fetchone()[0]
        error = self._db.execute(
            "SELECT id, last_error FROM segments WHERE last_error IS NOT NULL ORDER BY next_attempt DESC LIMIT 1"
        ).fetchone()
        return {"last_upload": upload, "last_error": None if error is None else f"{error[0]}: {error[1]}"}

    def add_dir(self, path: str, write_cap: str | None, read_cap: str | None, created_at: str) -> None:
        """A directory made (or thawed: a mutable copy of a frozen one) at ``path``."""
        self._db.execute(
            "INSERT OR REPLACE INTO dirs (path, write_cap, read_cap, created_at) VALUES (?, ?, ?, ?)",
            (path, write_cap, read_cap, created_at),
        )

    def stored_paths(self, first_id: str, end_id: str) -> list[str]:
        """Store paths of the kept segments whose ids lie in [first_id, end_id): by the id's
        index, so cheap however large the manifest."""
        query = ("SELECT store_path FROM segments WHERE id >= ? AND id < ? AND store_path IS NOT NULL "
                 "AND state != 'forgotten'")
        return [path for (path,) in self._db.execute(query, (first_id, end_id))]

    def dir_frozen(self, path: str, read_cap: str | None, when: str) -> None:
        """The directory at ``path`` is now the immutable one ``read_cap`` names: the mutable
        one's caps are dropped (its lease is no longer renewed; the new one's first lease
        came with it), and the new cap is published again."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            old = self._db.execute("SELECT read_cap FROM dirs WHERE path = ?", (path,)).fetchone()
            if old is not None and old[0] and old[0] != read_cap:
                self._db.execute("DELETE FROM leases WHERE target = ?", (old[0],))
            self._db.execute(
                "UPDATE dirs SET write_cap = NULL, read_cap = ?, created_at = ?, frozen_at = ?, published_seq = NULL "
                "WHERE path = ?",
                (read_cap, when, when, path),
            )

    def forget_dirs(self, paths: list[str]) -> None:
        """Drop directories found gone from the store, so the uploader makes them again."""
        self._db.executemany("DELETE FROM dirs WHERE path = ?", [(path,) for path in paths])

    def dirs(self) -> dict[str, dict[str, Any]]:
        return {
            row["path"]: {"write_cap": row["write_cap"], "read_cap": row["read_cap"], "created_at": row["created_at"],
                          "frozen_at": row["frozen_at"]}
            for row in self._db.execute("SELECT * FROM dirs ORDER BY path")
        }

    def dirs_under(self, root: str) -> dict[str, dict[str, Any]]:
        """``dirs()`` for the store root that ``root`` names (a hash: never a cap in clear).
        Caps recorded under another root mean nothing in this one (store.url changed), so they
        are forgotten. A manifest that names no root (older, or rebuilt from the store) is taken
        to be of this one: a cap it holds that the store cannot use fails its first upload, and
        the uploader forgets it then."""
        if self.get_meta(DIRS_ROOT) not in (None, root):
            self._db.execute("DELETE FROM dirs")
        self.set_meta(DIRS_ROOT, root)
        return self.dirs()

    def unpublished(self) -> tuple[list[SegmentRow], list[SegmentRow], dict[str, str | None]]:
        """What the open period lists: uploaded segments and directories not yet in a closed
        published file, and forgotten segments that a closed file lists, whose tombstone is not
        yet published (one forgotten before any closed file listed it just drops out)."""
        rows = [SegmentRow.from_sql(row) for row in self._db.execute(
            "SELECT * FROM segments WHERE published_seq IS NULL AND store_path IS NOT NULL AND state != 'forgotten' "
            "ORDER BY uploaded_at, id"
        )]
        tombstones = [SegmentRow.from_sql(row) for row in self._db.execute(
            "SELECT * FROM segments WHERE state = 'forgotten' AND published_seq IS NOT NULL AND tombstone_seq IS NULL "
            "ORDER BY id"
        )]
        dirs = {row[0]: row[1] for row in self._db.execute(
            "SELECT path, read_cap FROM dirs WHERE published_seq IS NULL ORDER BY path"
        )}
        return rows, tombstones, dirs

    def mark_published(
        self, segments: list[str], tombstones: list[str], dirs: Mapping[str, str | None], seq: int,
        meta: dict[str, str],
    ) -> None:
        """These segments, tombstones and directories (path: the read cap published) are in the
        closed file ``seq``, and the chain's state is ``meta``: one transaction, so a crash
        neither loses nor repeats one. A directory whose cap changed since it was read (frozen
        or thawed meanwhile) stays unpublished: its new cap goes in the next file."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("UPDATE segments SET published_seq = ? WHERE id = ?", [(seq, s) for s in segments])
            self._db.executemany("UPDATE segments SET tombstone_seq = ? WHERE id = ?", [(seq, s) for s in tombstones])
            self._db.executemany("UPDATE dirs SET published_seq = ? WHERE path = ? AND read_cap IS ?",
                                 [(seq, path, cap) for path, cap in dirs.items()])
            self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(meta.items()))

    def lease_targets(self) -> list[LeaseTarget]:
        """Everything in the store this sink made and still keeps, with when its lease was last
        added: the renewal's, else the upload's or creation's (an upload adds a first lease)."""
        query = f"""
            SELECT 'segment', s.id, s.read_cap, NULL,
                   coalesce(l.renewed_at, {_EPOCH.format("s.uploaded_at")}, 0)
              FROM segments s LEFT JOIN leases l ON l.target = s.read_cap
             WHERE s.read_cap IS NOT NULL AND s.state IN ('uploaded', 'verified', 'pruned')
            UNION ALL
            SELECT 'dir', d.path, d.read_cap, NULL, coalesce(l.renewed_at, {_EPOCH.format("d.created_at")}, 0)
              FROM dirs d LEFT JOIN leases l ON l.target = d.read_cap
             WHERE d.read_cap IS NOT NULL
            UNION ALL
            SELECT 'root', '/', m.value, NULL, coalesce(l.renewed_at, 0)
              FROM meta m LEFT JOIN leases l ON l.target = m.value
             WHERE m.key = 'root_read_cap'
        """
        return [LeaseTarget(*row) for row in self._db.execute(query)]

    def renewed_at(self, key: str) -> float | None:
        """When the lease of ``key`` (a LeaseTarget's key) was last renewed, if ever."""
        row = self._db.execute("SELECT renewed_at FROM leases WHERE target = ?", (key,)).fetchone()
        return None if row is None else float(row[0])

    def lease_renewed(self, target: "LeaseTarget", when: float) -> None:
        self._db.execute("INSERT OR REPLACE INTO leases (target, renewed_at) VALUES (?, ?)", (target.key, when))

    def document(self, *, include_write_caps: bool = False) -> dict[str, Any]:
        """The manifest as JSON, what ``manifest export`` prints: every segment with its local
        state, directories and the root, read caps only unless asked. (What is published to the
        store is format 2: archiver/format/published.py.)"""
        root: dict[str, Any] = {"read_cap": self.get_meta("root_read_cap")}
        if include_write_caps:
            root["write_cap"] = self.get_meta("root_write_cap")
        dirs = {}
        for path, caps in self.dirs().items():
            dirs[path] = {"read_cap": caps["read_cap"]}
            if include_write_caps:
                dirs[path]["write_cap"] = caps["write_cap"]
        segments = []
        for row in self.segments():
            entry = {name: getattr(row, name) for name in EXPORTED_SEGMENT_FIELDS}
            entry.update(local_path=row.local_path, attempts=row.attempts, last_error=row.last_error)
            segments.append(entry)
        return {
            "format": "archiver-manifest-export",
            "version": EXPORT_VERSION,
            "sink_id": self.get_meta("sink_id"),
            "root": root,
            "dirs": dirs,
            "segments": segments,
        }


    def segments(
        self, stream: str | None = None, since: str | None = None, until: str | None = None
    ) -> Iterator[SegmentRow]:
        """Segments kept (not forgotten) whose time range overlaps [since, until), oldest first:
        what readers, the published manifest and ``manifest export`` list."""
        query = "SELECT * FROM segments WHERE state != 'forgotten'"
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

    def import_position(self, head: bytes) -> ImportPosition:
        """Where the import of the file starting with ``head`` stands: by its fingerprint, or
        by a shorter start it had when last read (it grew); offset 0 for a file never seen."""
        fingerprint = file_fingerprint(head)
        query = "SELECT fingerprint, offset, records, rejected FROM imports WHERE fingerprint = ? AND head_bytes = ?"
        row = self._db.execute(query, (fingerprint, len(head))).fetchone()
        if row is None:
            shorter = self._db.execute("SELECT DISTINCT head_bytes FROM imports WHERE head_bytes < ?", (len(head),))
            for (size,) in shorter.fetchall():
                row = self._db.execute(query, (file_fingerprint(head[:size]), size)).fetchone()
                if row is not None:
                    break
        if row is None:
            return ImportPosition(fingerprint, len(head))
        return ImportPosition(fingerprint, len(head), row[1], row[2], row[3], known=row[0])

    def import_offset(self, fingerprint: str) -> int | None:
        """How far the file the manifest knows by ``fingerprint`` was imported; None for one
        it does not know."""
        row = self._db.execute("SELECT offset FROM imports WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return None if row is None else int(row[0])

    def save_import(self, position: ImportPosition, path: str, when: str, pending: dict[str, Any] | None = None) -> None:
        """Record ``position`` (re-keyed by its current fingerprint), with the batch being
        appended when ``pending`` says so."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if position.known not in (None, position.fingerprint):
                self._db.execute("DELETE FROM imports WHERE fingerprint = ?", (position.known,))
            self._db.execute(
                "INSERT OR REPLACE INTO imports (fingerprint, head_bytes, path, offset, records, rejected, pending, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (position.fingerprint, position.head_bytes, path, position.offset, position.records, position.rejected,
                 None if pending is None else orjson.dumps(pending).decode(), when),
            )

    def unfinished_imports(self) -> list[tuple[str, dict[str, Any]]]:
        """(fingerprint, pending batch) of each import cut short while appending a batch."""
        rows = self._db.execute("SELECT fingerprint, pending FROM imports WHERE pending IS NOT NULL").fetchall()
        return [(fingerprint, orjson.loads(pending)) for fingerprint, pending in rows]

    def finish_import(self, fingerprint: str, completed: bool) -> None:
        """The batch pending for ``fingerprint`` is durable (``completed``: its offset and counts
        hold now) or was cut off again (the position stays where it was)."""
        pending = self._db.execute("SELECT pending FROM imports WHERE fingerprint = ?", (fingerprint,)).fetchone()
        if pending is None or pending[0] is None:
            return
        batch = orjson.loads(pending[0])
        if completed:
            self._db.execute(
                "UPDATE imports SET offset = ?, records = records + ?, rejected = rejected + ?, pending = NULL "
                "WHERE fingerprint = ?", (batch["offset"], batch["records"], batch["rejected"], fingerprint),
            )
        else:
            self._db.execute("UPDATE imports SET pending = NULL WHERE fingerprint = ?", (fingerprint,))


EXPORTED_SEGMENT_FIELDS = (
    "id", "stream", "state", "store_path", "read_cap", "verify_cap", "compression", "raw_bytes",
    "stored_bytes", "sha256", "records", "first_ts", "last_ts", "levels", "sealed_at", "uploaded_at",
    "verified_at",
)
