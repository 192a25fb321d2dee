"""The published manifest, format 2: incremental files, written once, in a hash chain per sink.

Store layout (docs/format.md, "The published manifest, format version 2")::

    _manifest/<sink-id>/current.json                         the open period: rewritten, small
    _manifest/<sink-id>/<YYYY>/<YYYY-MM-DD>/<name>.json      closed periods of a day not compacted yet
    _manifest/<sink-id>/<YYYY>/<name>.json                   a compacted day

``<name>`` is ``<seq, 10 digits>-<first>-<last>`` (``first``/``last``: the event-time range of
what the file lists, ``YYYYmmddTHHMMSSZ``, rounded outwards), so a reader picks the files that
may hold a time range from a listing, without fetching the others. Every closed file carries
the sha256 of its predecessor's bytes (``prev``); a compacted day lists the hashes of the
period files it replaces (``compacts``), so a head an auditor pinned before a compaction is
still found in the chain. Entries carry what a reader needs and nothing else.

Pure functions: building, naming and parsing files, and checking a chain. No I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import orjson

from archiver.format.manifest import ManifestError, SegmentRow

FORMAT = "archiver-manifest"
VERSION = 2
KNOWN_VERSIONS = (1, 2)
CURRENT = "current.json"
# What a reader needs of a segment: where it is, how to read and check it, what it holds.
ENTRY_FIELDS = (
    "id", "stream", "store_path", "read_cap", "verify_cap", "compression", "raw_bytes", "stored_bytes",
    "sha256", "records", "first_ts", "last_ts", "levels", "sealed_at", "uploaded_at",
)


def entry_of(row: SegmentRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in ENTRY_FIELDS}


def tombstone_of(row: SegmentRow) -> dict[str, Any]:
    """A forgotten segment: its id, and its event range so the tombstone is read with it."""
    return {"id": row.id, "stream": row.stream, "first_ts": row.first_ts, "last_ts": row.last_ts,
            "forgotten_at": row.forgotten_at, "reason": row.forgotten_reason}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def compact_time(ts: str, upward: bool) -> str:
    """``2026-11-23T10:15:00.120000Z`` -> ``20261123T101500Z`` (or the next second when
    ``upward`` and there is a fraction), so a name's range always covers its entries'."""
    whole = ts[:19].replace("-", "").replace(":", "")
    if upward and ts[20:26].strip("0"):
        seconds = int(whole[-2:]) + 1
        if seconds < 60:
            return f"{whole[:-2]}{seconds:02d}Z"
        return _next_minute(whole)
    return whole + "Z"


def _next_minute(whole: str) -> str:
    from datetime import datetime, timedelta

    moment = datetime.strptime(whole, "%Y%m%dT%H%M%S") + timedelta(seconds=1)
    return moment.strftime("%Y%m%dT%H%M%SZ")


def time_range(segments: Iterable[Mapping[str, Any]]) -> tuple[str | None, str | None]:
    firsts = [s["first_ts"] for s in segments if s.get("first_ts")]
    lasts = [s["last_ts"] for s in segments if s.get("last_ts")]
    return (min(firsts) if firsts else None, max(lasts) if lasts else None)


@dataclass(frozen=True)
class ChainName:
    """A closed file's name: its place in the chain and the event-time range it covers."""

    seq: int
    first: str  # compact time, or "-" when the file lists no timed entry
    last: str

    @property
    def filename(self) -> str:
        return f"{self.seq:010d}-{self.first}-{self.last}.json"

    @classmethod
    def parse(cls, filename: str) -> "ChainName | None":
        stem, _, suffix = filename.partition(".")
        seq, _, times = stem.partition("-")
        first, _, last = ("-", "", "-") if times == "---" else times.partition("-")
        if suffix != "json" or not seq.isdigit() or not first or not last:
            return None
        return cls(int(seq), first, last)

    def overlaps(self, since: str | None, until: str | None) -> bool:
        """Whether the file may list a segment overlapping [since, until) (canonical times)."""
        if self.first == "-":
            return True  # tombstones and directories only: cheap, and needed to apply them
        if until is not None and self.first >= compact_time(until, upward=True):
            return False
        return since is None or self.last >= compact_time(since, upward=False)


@dataclass
class ChainFile:
    """One closed file of a sink's chain, or its open period (``kind == "current"``)."""

    kind: str  # period | day | current
    sink_id: str
    seq: int
    prev: str | None
    published_at: str
    root: dict[str, Any]
    dirs: dict[str, dict[str, Any]] = field(default_factory=dict)
    segments: list[dict[str, Any]] = field(default_factory=list)
    forgotten: list[dict[str, Any]] = field(default_factory=list)
    compacts: list[str] = field(default_factory=list)

    def name(self) -> ChainName:
        first, last = time_range([*self.segments, *self.forgotten])
        return ChainName(self.seq, compact_time(first, False) if first else "-",
                         compact_time(last, True) if last else "-")

    def to_bytes(self) -> bytes:
        """Compact, keys sorted: the bytes whose sha256 the next file carries."""
        document: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "kind": self.kind, "sink_id": self.sink_id, "seq": self.seq,
            "prev": self.prev, "published_at": self.published_at, "root": self.root, "dirs": self.dirs,
            "segments": self.segments, "forgotten": self.forgotten,
        }
        if self.kind == "day":
            document["compacts"] = self.compacts
        return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> "ChainFile":
        return cls(
            document["kind"], document["sink_id"], document["seq"], document.get("prev"), document["published_at"],
            document.get("root") or {}, document.get("dirs") or {}, document.get("segments") or [],
            document.get("forgotten") or [], document.get("compacts") or [],
        )


def parse_document(data: bytes, origin: str) -> dict[str, Any]:
    """A published manifest file of either version, checked: an unknown format or version is
    refused, not guessed at."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise ManifestError(f"{origin} is not JSON: {err}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ManifestError(f"{origin} is not an archiver manifest")
    if document.get("version") not in KNOWN_VERSIONS:
        raise ManifestError(
            f"{origin} has manifest format version {document.get('version')!r}; this archiver reads "
            f"versions {', '.join(map(str, KNOWN_VERSIONS))}: upgrade archiver"
        )
    return document


def merge(files: Iterable[ChainFile]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Segments and directories of a sink, in chain order: a later entry for an id replaces an
    earlier one (a segment uploaded again), a tombstone removes it."""
    segments: dict[str, dict[str, Any]] = {}
    dirs: dict[str, dict[str, Any]] = {}
    for chain_file in sorted(files, key=lambda f: (f.kind == "current", f.seq)):
        for entry in chain_file.segments:
            segments[entry["id"]] = entry
        for tombstone in chain_file.forgotten:
            segments.pop(tombstone["id"], None)
        dirs.update(chain_file.dirs)
    return segments, dirs


@dataclass
class ChainReport:
    """What checking a chain found: problems by file name, and the head's hash."""

    files: int = 0
    head: str | None = None
    problems: list[str] = field(default_factory=list)
    passes: set[str] = field(default_factory=set)  # every hash the chain vouches for


def check_chain(files: list[tuple[str, bytes]], current: bytes | None) -> ChainReport:
    """Check a sink's closed files (path, bytes): each parses, its name matches its content,
    seqs strictly increase, and each ``prev`` is the sha256 of the file before it (or the last
    hash that file compacted). A period file a day file compacted, left by an interrupted
    compaction, is skipped. ``current``, when given, must name the head."""
    report = ChainReport()
    parsed: list[tuple[str, bytes, ChainFile | None, str]] = []
    for path, data in files:
        try:
            parsed.append((path, data, ChainFile.from_document(parse_document(data, path)), ""))
        except (ManifestError, KeyError, TypeError) as err:
            parsed.append((path, data, None, str(err)))
    compacted = {digest for _, _, chain_file, _ in parsed if chain_file for digest in chain_file.compacts}
    name_seq = {path: (ChainName.parse(path.rsplit("/", 1)[-1]) or ChainName(-1, "", "")).seq for path, _ in files}
    previous: ChainFile | None = None
    previous_hash: str | None = None
    for path, data, chain_file, error in sorted(parsed, key=lambda item: (item[2].seq if item[2] else name_seq[item[0]])):
        digest = sha256_hex(data)
        if chain_file is None:
            report.problems.append(f"{path}: unreadable: {error}")
            continue
        if chain_file.kind == "period" and digest in compacted:
            continue
        report.files += 1
        if ChainName.parse(path.rsplit("/", 1)[-1]) != chain_file.name():
            report.problems.append(f"{path}: its name does not match its seq and time range (renamed or altered)")
        if chain_file.to_bytes() != data:
            report.problems.append(f"{path}: not in canonical form (altered)")
        expected: set[str | None] = {previous_hash}
        if previous is not None and previous.compacts:
            expected.add(previous.compacts[-1])
        if previous is not None and chain_file.seq <= previous.seq:
            report.problems.append(f"{path}: out of order after seq {previous.seq}")
        if chain_file.prev not in expected:
            report.problems.append(
                f"{path}: the file before it is missing or altered (it names {str(chain_file.prev)[:12]}…)"
                if chain_file.prev else f"{path}: starts a second chain"
            )
        report.passes.add(digest)
        report.passes.update(chain_file.compacts)
        previous, previous_hash = chain_file, digest
    report.head = previous_hash
    if current is not None:
        try:
            head = parse_document(current, CURRENT).get("head") or {}
        except ManifestError as err:
            report.problems.append(f"{CURRENT}: {err}")
        else:
            if head.get("sha256") != report.head:
                report.problems.append(f"{CURRENT} names head {str(head.get('sha256'))[:12]}…, but the chain ends at "
                                       f"{str(report.head)[:12]}… (a closed file missing, altered or added)")
    return report
