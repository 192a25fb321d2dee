"""Reading archives back: list, filter, stream records, restore, verify.

An archive is read from a data dir (:func:`data_dir_archive`) or from a store root
(:func:`store_archive`, read-only caps work); ``archiver.open_archive`` picks one from what a
user names. From a data dir the sink's own manifest answers, and each
segment is read from its local copy while there is one (the newest data: sealed, not yet
uploaded), else from the store; from a store URL the published manifests of every sink under
that root answer.

Time bounds: ``since`` is inclusive and ``until`` exclusive, compared with the record's ``ts``.
``level`` is a minimum for the standard levels (``ERROR`` also yields ``CRITICAL``); any other
level name matches only itself.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import orjson
from archiver.format.layout import DataDir
from archiver.format.manifest import Manifest, SegmentRow, open_for_reading
from archiver.format.search_index import GRAM, SearchIndex, SearchIndexError, encode
from archiver.format.segment import open_compressed
from archiver.format.subset import Subset
from archiver.format.store_layout import index_path, store_path
from archiver.read.published import published_rows
from archiver.store.base import HasCaps, Store, StoreError
from archiver.store.integrity import check_stored, sha256_of

_ROW_FIELDS = {f.name for f in fields(SegmentRow)}
LEVEL_ORDER = {"NOTSET": 0, "DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
Where = Callable[[dict[str, Any]], bool]
# (stream, since, until) -> rows that may overlap; a superset is fine, Filters decide exactly.
RowSource = Callable[[str | None, str | None, str | None], list[SegmentRow]]
_Source = tuple[SegmentRow | None, Callable[[], Iterator[bytes]], bool]


@dataclass(frozen=True)
class Filters:
    """What ``records`` keeps; every given condition must hold."""

    stream: str | None = None
    since: str | None = None
    until: str | None = None
    level: str | None = None
    logger: str | None = None
    contains: str | None = None
    where: Where | None = None

    def segment_may_match(self, row: SegmentRow) -> bool:
        """False when the manifest alone proves no record of the segment can match."""
        if self.stream is not None and row.stream != self.stream:
            return False
        if self.since is not None and (row.last_ts or "") < self.since:
            return False
        if self.until is not None and (row.first_ts or "") >= self.until:
            return False
        return self.level is None or any(self._level_ok(name) for name in row.levels)

    @property
    def index_can_tell(self) -> bool:
        """Whether a segment's search index can rule it out beyond what the manifest says."""
        return self.logger is not None or (self.contains is not None and len(encode(self.contains)) >= GRAM)

    def index_may_match(self, index: SearchIndex) -> bool:
        """False when the segment's search index proves no record of it can match."""
        if self.contains is not None and not index.may_contain(self.contains):
            return False
        if self.logger is not None and not index.may_have_logger(self.logger):
            return False
        return self.level is None or any(self._level_ok(name) for name in index.levels)

    def whole_segment_matches(self, row: SegmentRow) -> bool:
        """True when every record of the segment matches, so none needs to be parsed."""
        per_record = (self.level, self.logger, self.contains, self.where)
        if any(condition is not None for condition in per_record):
            return False
        if self.since is not None and (row.first_ts is None or row.first_ts < self.since):
            return False
        return self.until is None or (row.last_ts is not None and row.last_ts < self.until)

    def matches(self, record: dict[str, Any]) -> bool:
        ts = record["ts"]
        if (self.since is not None and ts < self.since) or (self.until is not None and ts >= self.until):
            return False
        if self.level is not None and not self._level_ok(record.get("level") or "NOTSET"):
            return False
        if self.logger is not None and not fnmatch.fnmatchcase(record.get("logger") or "", self.logger):
            return False
        if self.contains is not None and self.contains not in (record.get("message") or ""):
            return False
        return self.where is None or bool(self.where(record))

    def _level_ok(self, name: str) -> bool:
        wanted = (self.level or "").upper()
        if wanted in LEVEL_ORDER and name in LEVEL_ORDER:
            return LEVEL_ORDER[name] >= LEVEL_ORDER[wanted]
        return name == wanted


@dataclass
class Problem:
    """One thing `verify` found wrong with a segment."""

    segment: str
    where: str  # "local" or "store"
    problem: str


@dataclass(frozen=True)
class Checked:
    """One segment as `verify` finished it: whether its data was read back, what is wrong."""

    segment: str
    read: bool
    problems: list[Problem]


@dataclass
class VerifyReport:
    checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, checked: Checked, on_checked: Callable[[Checked], None]) -> None:
        self.problems += checked.problems
        on_checked(checked)


class Archive:
    """An archive: the segments a manifest lists, readable from a local spool and/or a store."""

    def __init__(
        self,
        rows: RowSource,
        *,
        data_dir: DataDir | None = None,
        store: Callable[[], Store | None] = lambda: None,
        shares_happy: int = 1,
    ) -> None:
        self._rows = rows
        self.data_dir = data_dir
        self._store_factory = store
        self._store: Store | None = None
        self.shares_happy = shares_happy

    @property
    def store(self) -> Store | None:
        """The store, opened on first need (listing never needs it)."""
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def streams(self) -> list[str]:
        return sorted({row.stream for row in self._rows(None, None, None)})

    def segments(self, stream: str | None = None, since: str | None = None, until: str | None = None) -> list[SegmentRow]:
        """Segments whose time range overlaps [since, until), oldest first; nothing is downloaded."""
        wanted = Filters(stream=stream, since=since, until=until)
        return [row for row in self._rows(stream, since, until) if wanted.segment_may_match(row)]

    def records(
        self,
        stream: str | None = None,
        since: str | None = None,
        until: str | None = None,
        level: str | None = None,
        logger: str | None = None,
        contains: str | None = None,
        where: Where | None = None,
        include_open: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Matching records, segment by segment (oldest first), decompressed on the fly: memory
        stays bounded whatever the archive's size. Segments whose time range or level counts
        cannot match are never opened, nor are those whose search index rules out ``contains``
        or ``logger``."""
        wanted = Filters(stream, since, until, level, logger, contains, where)
        for row, lines, whole in self._sources(wanted, include_open):
            for line in lines():
                record = orjson.loads(line)
                if whole or wanted.matches(record):
                    yield record

    def json_chunks(self, wanted: Filters = Filters(), include_open: bool = False) -> Iterator[bytes]:
        """The matching records as stored (canonical JSON lines), as byte chunks that join into
        whole lines. Segments that match whole are copied through in 1 MiB blocks, never parsed."""
        for row, lines, whole in self._sources(wanted, include_open):
            if row is not None and whole:
                with open_compressed(self.open_segment(row), row.compression) as stream:
                    while block := stream.read(1024 * 1024):
                        yield block
            else:
                for line in lines():
                    if wanted.matches(orjson.loads(line)):
                        yield line

    def _sources(self, wanted: Filters, include_open: bool) -> list[_Source]:
        """(row, its lines, whether all of them match) for every segment that may match; open
        segments have no row."""
        sources: list[_Source] = [
            (row, partial(self.segment_lines, row), wanted.whole_segment_matches(row))
            for row in self._rows(wanted.stream, wanted.since, wanted.until)
            if wanted.segment_may_match(row) and (not wanted.index_can_tell or self._index_may_match(row, wanted))
        ]
        if include_open and self.data_dir is not None:
            sources += [
                (None, partial(_whole_lines, path), False)
                for seg_stream, _, path in self.data_dir.open_segments()
                if wanted.stream is None or seg_stream == wanted.stream
            ]
        return sources

    def _index_may_match(self, row: SegmentRow, wanted: Filters) -> bool:
        """Asks the segment's search index, local or published; without one (a segment sealed
        before indexes, an index this archiver cannot read) the segment is read."""
        local = self.data_dir.index_path(row.stream, row.id) if self.data_dir is not None else None
        stored = index_path(row)
        try:
            if local is not None and local.is_file():
                data = local.read_bytes()
            elif self.store is not None and stored is not None:
                data = self.store.read_bytes(stored)
            else:
                return True
            return wanted.index_may_match(SearchIndex.parse(data))
        except (StoreError, FileNotFoundError, SearchIndexError):
            return True

    def open_segment(self, row: SegmentRow) -> BinaryIO:
        """The stored (compressed) bytes of a segment: the local copy if present, else the store's."""
        local = self._local(row)
        if local is not None:
            return open(local, "rb")
        store = self.store
        if store is None or row.store_path is None:
            raise FileNotFoundError(f"segment {row.id} has no local copy and no store to read it from")
        if isinstance(store, HasCaps) and row.read_cap:
            return store.open_cap(row.read_cap, row.stored_bytes, row.store_path)
        return store.open(row.store_path)

    def segment_lines(self, row: SegmentRow) -> Iterator[bytes]:
        """A sealed segment's canonical JSON lines, decompressed as they are read (local copy
        first, else the store): for readers that need every line in order, unfiltered."""
        with open_compressed(self.open_segment(row), row.compression) as lines:
            yield from lines

    def _local(self, row: SegmentRow) -> Path | None:
        if self.data_dir is None or not row.local_path:
            return None
        path = self.data_dir.root / row.local_path
        return path if path.exists() else None

    def restore(
        self,
        dest: Path | str,
        stream: str | None = None,
        since: str | None = None,
        until: str | None = None,
        progress: Callable[[int], None] = lambda n: None,
    ) -> list[Path]:
        """Copy the matching segments, byte for byte, to ``dest/<store path>``; each copy is
        checked against the manifest's sha256 before it is kept."""
        restored = []
        for row in self.segments(stream, since, until):
            target = Path(dest) / (row.store_path or store_path(row)).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            digest = hashlib.sha256()
            with self.open_segment(row) as source, open(partial, "wb") as out:
                while chunk := source.read(1024 * 1024):
                    digest.update(chunk)
                    out.write(chunk)
                    progress(len(chunk))
            if digest.hexdigest() != row.sha256:
                partial.unlink()
                raise ValueError(f"segment {row.id} does not match its sha256 in the manifest; not restored")
            partial.replace(target)
            restored.append(target)
        return restored

    def verify(
        self,
        repair: bool = False,
        progress: Callable[[int], None] = lambda n: None,
        *,
        quick: bool = False,
        subset: Subset | None = None,
        on_checked: Callable[[Checked], None] = lambda checked: None,
    ) -> VerifyReport:
        """Hash every local and stored copy against the manifest; on Tahoe also check the
        grid's health (count-happiness >= shares_happy), repairing if asked. A sealed segment
        that is neither on local disk nor uploaded is reported missing.

        Reading everything back costs a download of the archive, so it can be spread out:
        ``subset`` reads only that subset's segments (restic's ``--read-data-subset``), and
        ``quick`` gives the others (all, without a subset) a check that reads no data: sizes
        of local copies, and the store's health check without verify (or a stat). Each
        segment is handed to ``on_checked`` when done."""
        rows = self._rows(None, None, None)
        chosen = subset.choose([row.id for row in rows]) if subset is not None else None
        report = VerifyReport()
        not_found: list[tuple[SegmentRow, bool]] = []
        for row in rows:
            read = row.id in chosen if chosen is not None else not quick
            if not (read or quick):
                continue
            report.checked += 1
            if row.store_path is None and self._local(row) is None:
                not_found.append((row, read))
                continue
            report.add(Checked(row.id, read, self._check(row, read, repair, progress)), on_checked)
        if not_found:
            # A running sink may have uploaded and pruned one since the rows were read; the
            # manifest commits the upload before the local copy goes, so a fresh read tells.
            now = {row.id: row for row in self._rows(None, None, None)}
            for row, read in not_found:
                row = now.get(row.id, row)
                report.add(Checked(row.id, read, self._check(row, read, repair, progress)), on_checked)
        return report

    def _check(self, row: SegmentRow, read: bool, repair: bool, progress: Callable[[int], None]) -> list[Problem]:
        """Every copy of one segment: read back and hashed, or (not ``read``) looked at."""
        problems = []
        local = self._local(row)
        if local is not None:
            if read and sha256_of(open(local, "rb"), progress) != row.sha256:
                problems.append(Problem(row.id, "local", "the local copy does not match its sha256"))
            elif not read and (size := local.stat().st_size) != row.stored_bytes:
                problems.append(Problem(row.id, "local", f"the local copy has {size} bytes, not {row.stored_bytes}"))
        if row.store_path is not None:
            problems += self._verify_stored(row, read, repair, progress)
        elif local is None:
            problems.append(Problem(row.id, "local", "missing: no local copy, and never uploaded"))
        return problems

    def _verify_stored(self, row: SegmentRow, read: bool, repair: bool, progress: Callable[[int], None]) -> list[Problem]:
        store = self.store
        if store is None:
            return [Problem(row.id, "store", "uploaded, but no store is configured to check it")]
        assert row.store_path is not None
        problem = check_stored(
            store, row.store_path, sha256=row.sha256, size=row.stored_bytes, read=read,
            shares_happy=self.shares_happy, repair=repair, progress=progress,
        )
        return [] if problem is None else [Problem(row.id, "store", problem)]


def _whole_lines(path: Path) -> Iterator[bytes]:
    """An open segment's complete lines; a line still being written is left for later."""
    try:
        with open(path, "rb") as handle:
            for line in handle:
                if line.endswith(b"\n"):
                    yield line
    except FileNotFoundError:  # sealed meanwhile
        return


def store_archive(store: Store) -> Archive:
    """Every sink's segments under one store root, from the published manifests: only the
    manifest files whose time range overlaps the asked one are read."""

    def rows(stream: str | None, since: str | None, until: str | None) -> list[SegmentRow]:
        return published_rows(store, since, until)

    return Archive(rows, store=lambda: store)


def data_dir_archive(data_dir: DataDir, store_url: str | None = None, shares_happy: int = 1) -> Archive:
    """One sink's archive: its manifest, its local spool, and its store for pruned segments."""

    def rows(stream: str | None, since: str | None, until: str | None) -> list[SegmentRow]:
        manifest = open_for_reading(data_dir.root)
        try:
            return list(manifest.segments(stream, since, until))
        finally:
            manifest.close()

    def store() -> Store | None:
        manifest = open_for_reading(data_dir.root)
        try:
            url = store_url or manifest.get_meta("store_url")
            cap = manifest.get_meta("root_read_cap")
        finally:
            manifest.close()
        if not url:
            return None
        from archiver.store import open_store

        return open_store(url, root_cap=cap, create=False)

    return Archive(rows, data_dir=data_dir, store=store, shares_happy=shares_happy)


def existing_data_dir(path: Path) -> DataDir:
    """``path`` as a DataDir, or FileNotFoundError when it holds no manifest."""
    if not (path / Manifest.FILENAME).exists():
        raise FileNotFoundError(f"{path} is not an archiver data dir (no {Manifest.FILENAME})")
    return DataDir(path)
