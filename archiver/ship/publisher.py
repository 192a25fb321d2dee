"""Publishing the manifest, format 2 (archiver/format/published.py): O(new segments) a publish.

Each publish rewrites only ``current.json``, the open period: the uploaded segments and new
directories not yet in a closed file. A period closes at the first publish after its hour
ends (by publish time) or once it lists ``PERIOD_MAX`` segments: its entries go into one file
written once, chained to its predecessor by sha256, and the manifest records which file holds
each row, in one transaction with the chain's state. When the first period of a new day
closes, the previous day's period files are compacted into one day file (also written once),
then removed. A segment uploaded late (after an outage, a replayed buffer, an import) simply
lands in the current period: files are keyed by publish time and name the event-time range
they hold.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Callable

import orjson

from archiver.common.units import format_ts
from archiver.format.manifest import Manifest, SegmentRow
from archiver.format.published import (
    CURRENT,
    FORMAT,
    VERSION,
    ChainFile,
    entry_of,
    merge,
    parse_document,
    sha256_hex,
    tombstone_of,
)
from archiver.format.store_layout import published_dir, published_path
from archiver.store.base import NotFound, Store

log = logging.getLogger(__name__)

PERIOD_SECONDS = 3600
PERIOD_MAX = 100  # keeps current.json, rewritten by every publish, under 64 KiB with Tahoe's caps


def _day(moment: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(moment))


class Publisher:
    """Publishes one sink's manifest into ``store``; callers serialise publishes."""

    def __init__(self, sink_id: str, clock: Callable[[], float] = time.time) -> None:
        self.sink_id = sink_id
        self._clock = clock
        self.base = published_dir(sink_id)

    def publish(self, store: Store, manifest: Manifest, ensure_dir: Callable[[str], None]) -> dict[str, int]:
        """Write what is new; ``ensure_dir`` makes a store directory (and records its caps)."""
        now = self._clock()
        rows, tombstones, dirs = manifest.unpublished()
        started = float(manifest.get_meta("period_started") or now)
        closed = 0
        pending = len(rows) + len(tombstones)
        if pending and (int(now // PERIOD_SECONDS) != int(started // PERIOD_SECONDS) or pending >= PERIOD_MAX):
            self._close(store, manifest, ensure_dir, rows, tombstones, dirs, started, now)
            rows, tombstones, dirs, closed = [], [], {}, 1
            manifest.set_meta("period_started", repr(now))
        elif pending and manifest.get_meta("period_started") is None:
            manifest.set_meta("period_started", repr(now))
        ensure_dir(self.base)
        current = {
            "format": FORMAT, "version": VERSION, "kind": "current", "sink_id": self.sink_id,
            "head": {"seq": int(manifest.get_meta("chain_seq") or 0), "sha256": manifest.get_meta("chain_head")},
            "published_at": format_ts(now), "root": {"read_cap": manifest.get_meta("root_read_cap")},
            "dirs": {path: {"read_cap": cap} for path, cap in dirs.items()},
            "segments": [entry_of(row) for row in rows], "forgotten": [tombstone_of(row) for row in tombstones],
        }
        body = orjson.dumps(current, option=orjson.OPT_SORT_KEYS)
        store.put(f"{self.base}/{CURRENT}", io.BytesIO(body))
        manifest.set_meta("published_at", format_ts(now))
        return {"closed": closed, "open_entries": len(rows), "bytes": len(body)}

    def _close(
        self, store: Store, manifest: Manifest, ensure_dir: Callable[[str], None], rows: list[SegmentRow],
        tombstones: list[SegmentRow], dirs: dict[str, str | None], started: float, now: float,
    ) -> None:
        day = _day(started)
        open_day = manifest.get_meta("chain_day")
        if open_day and open_day != day:
            self._compact(store, manifest, ensure_dir, open_day, now)
        seq = int(manifest.get_meta("chain_seq") or 0) + 1
        head = manifest.get_meta("chain_head")
        chain_file = ChainFile(
            "period", self.sink_id, seq, head, format_ts(now), {"read_cap": manifest.get_meta("root_read_cap")},
            {path: {"read_cap": cap} for path, cap in dirs.items()}, [entry_of(row) for row in rows],
            [tombstone_of(row) for row in tombstones],
        )
        directory = f"{self.base}/{day[:4]}/{day}"
        ensure_dir(directory)
        path = f"{directory}/{chain_file.name().filename}"
        data = chain_file.to_bytes()
        for name in store.listdir(directory):  # left by a publish that died before recording its file
            if name.startswith(f"{seq:010d}-") and f"{directory}/{name}" != path:
                store.delete(f"{directory}/{name}")
        store.put(path, io.BytesIO(data))
        day_files = orjson.loads(manifest.get_meta("chain_day_files") or "[]") if open_day == day else []
        meta = {"chain_seq": str(seq), "chain_head": sha256_hex(data), "chain_day": day,
                "chain_day_files": orjson.dumps([*day_files, [path, sha256_hex(data)]]).decode()}
        if open_day != day:
            meta["chain_day_prev"] = head or ""
        manifest.mark_published([row.id for row in rows], [row.id for row in tombstones], dirs, seq, meta)
        log.info("published %s: %d segment(s), %d forgotten", path, len(rows), len(tombstones))
        if not manifest.get_meta("format_1_retired"):
            self._retire_format_1(store)
            manifest.set_meta("format_1_retired", format_ts(now))

    def _compact(self, store: Store, manifest: Manifest, ensure_dir: Callable[[str], None], day: str, now: float) -> None:
        """The day's period files become one day file, chained where they were; then they go."""
        listed = orjson.loads(manifest.get_meta("chain_day_files") or "[]")
        files = [ChainFile.from_document(parse_document(store.read_bytes(path), path)) for path, _ in listed]
        segments, dirs = merge(files)
        seq = int(manifest.get_meta("chain_seq") or 0) + 1
        day_file = ChainFile(
            "day", self.sink_id, seq, manifest.get_meta("chain_day_prev") or None, format_ts(now),
            {"read_cap": manifest.get_meta("root_read_cap")}, dirs, list(segments.values()),
            [tombstone for f in files for tombstone in f.forgotten], [digest for _, digest in listed],
        )
        directory = f"{self.base}/{day[:4]}"
        ensure_dir(directory)
        data = day_file.to_bytes()
        store.put(f"{directory}/{day_file.name().filename}", io.BytesIO(data))
        manifest.mark_published([], [], {}, seq, {"chain_seq": str(seq), "chain_head": sha256_hex(data),
                                              "chain_day": "", "chain_day_files": "[]", "chain_day_prev": ""})
        try:
            store.delete(f"{directory}/{day}")  # the period files with their directory
        except NotFound:
            pass  # removed by an earlier, interrupted compaction
        manifest.forget_dirs([f"{directory}/{day}"])
        log.info("compacted %d manifest file(s) of %s into %s", len(listed), day, day_file.name().filename)

    def _retire_format_1(self, store: Store) -> None:
        """The first closed file of format 2 lists every uploaded segment: the format 1 file
        (from an earlier release) would only repeat it, and list what is later forgotten."""
        try:
            store.delete(published_path(self.sink_id))
        except NotFound:
            pass
