"""Reading the published manifests under a store root: every sink's, format 1 or 2.

Format 1 is one file a sink (``_manifest/<sink-id>.json``), read whole. Format 2 is a
directory a sink (archiver/format/published.py): the reader lists it and fetches only the
closed files whose names say they may hold the asked time range, plus ``current.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Iterator

from archiver.format.manifest import SegmentRow
from archiver.format.published import CURRENT, ChainFile, ChainName, check_chain, merge, parse_document
from archiver.format.store_layout import MANIFEST_DIR
from archiver.store.base import NotFound, Store

_ROW_FIELDS = {f.name for f in fields(SegmentRow)}


def published_row(entry: dict[str, Any]) -> SegmentRow:
    """A manifest row from a published segment entry (it has no local copy)."""
    values = {key: value for key, value in entry.items() if key in _ROW_FIELDS}
    return SegmentRow(**{"local_path": "", "state": "uploaded", **values})


@dataclass
class SinkManifest:
    """What one sink published: its segment entries and directories, by format."""

    sink_id: str
    version: int
    root: dict[str, Any] = field(default_factory=dict)
    segments: dict[str, dict[str, Any]] = field(default_factory=dict)
    dirs: dict[str, dict[str, Any]] = field(default_factory=dict)
    chain: list[ChainFile] = field(default_factory=list)  # format 2: the closed files read
    forgotten: set[str] = field(default_factory=set)  # format 2: ids its tombstones name


def published_sinks(store: Store, since: str | None = None, until: str | None = None) -> list[SinkManifest]:
    """Every sink publishing under this root. For format 2, only the files that may hold
    segments overlapping [since, until) are fetched; format 1 files are read whole."""
    if not store.isdir(MANIFEST_DIR):
        return []
    sinks: dict[str, SinkManifest] = {}
    names = sorted(store.listdir(MANIFEST_DIR))
    for name in names:
        path = f"{MANIFEST_DIR}/{name}"
        if name.endswith(".json") and name[: -len(".json")] in names:
            continue  # a format 1 file its sink has not removed yet: the format 2 directory lists it all
        if name.endswith(".json"):
            document = parse_document(store.read_bytes(path), path)
            if document["version"] == 1:
                sink = sinks.setdefault(document["sink_id"], SinkManifest(document["sink_id"], 1))
                sink.root = document.get("root") or {}
                sink.segments = {entry["id"]: entry for entry in document["segments"]}
                sink.dirs = document.get("dirs") or {}
        elif store.isdir(path):
            sinks[name] = _read_sink(store, name, path, since, until)
    return list(sinks.values())


def chain_paths(store: Store, base: str) -> Iterator[tuple[str, ChainName]]:
    """The closed files of one sink's format 2 directory, with what their names say."""
    for year in sorted(store.listdir(base)):
        if not year.isdigit():
            continue
        for name in sorted(store.listdir(f"{base}/{year}")):
            path = f"{base}/{year}/{name}"
            parsed = ChainName.parse(name)
            if parsed is not None:
                yield path, parsed
            elif store.isdir(path):  # a day's period files, not compacted yet
                for period in sorted(store.listdir(path)):
                    parsed = ChainName.parse(period)
                    if parsed is not None:
                        yield f"{path}/{period}", parsed


def _read_sink(store: Store, sink_id: str, base: str, since: str | None, until: str | None) -> SinkManifest:
    files = [
        ChainFile.from_document(parse_document(store.read_bytes(path), path))
        for path, name in chain_paths(store, base) if name.overlaps(since, until)
    ]
    try:
        current = ChainFile.from_document({**parse_document(store.read_bytes(f"{base}/{CURRENT}"), CURRENT), "seq": 0})
    except NotFound:
        current = None
    read = [*files, *([current] if current else [])]
    segments, dirs = merge(read)
    forgotten = {tombstone["id"] for chain_file in read for tombstone in chain_file.forgotten}
    root = (current or (files[-1] if files else None))
    return SinkManifest(sink_id, 2, root.root if root else {}, segments, dirs, files, forgotten)


def published_rows(store: Store, since: str | None = None, until: str | None = None) -> list[SegmentRow]:
    """Every sink's published segments that may overlap [since, until), oldest first."""
    rows = [published_row(entry) for sink in published_sinks(store, since, until) for entry in sink.segments.values()]
    return sorted(rows, key=lambda row: (row.first_ts or "", row.id))


@dataclass
class ChainCheck:
    """One sink's chain, checked from the store: its problems, its head, and whether it passes
    through a pinned hash."""

    sink_id: str
    files: int
    head: str | None
    problems: list[str]
    passes: set[str]


def check_published_chains(store: Store) -> list[ChainCheck]:
    """Fetch and check every format 2 sink's whole chain (archiver verify does)."""
    checks: list[ChainCheck] = []
    if not store.isdir(MANIFEST_DIR):
        return checks
    for name in sorted(store.listdir(MANIFEST_DIR)):
        base = f"{MANIFEST_DIR}/{name}"
        if name.endswith(".json") or not store.isdir(base):
            continue
        files = [(path, store.read_bytes(path)) for path, _ in chain_paths(store, base)]
        try:
            current: bytes | None = store.read_bytes(f"{base}/{CURRENT}")
        except NotFound:
            current = None
        report = check_chain(files, current)
        checks.append(ChainCheck(name, report.files, report.head, report.problems, report.passes))
    return checks
