"""Rebuilding a lost data dir's manifest from the store: from the published manifests when
there are any, else by walking the tree and reading every segment back."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson

from archiver.common.units import format_ts
from archiver.format.layout import COMPRESSION_SUFFIX, SEGMENT_ID
from archiver.format.manifest import Manifest
from archiver.format.segment import SegmentTally, open_compressed
from archiver.format.published import ChainFile, parse_document, sha256_hex
from archiver.format.store_layout import MANIFEST_DIR, levels_of, published_dir
from archiver.read.published import chain_paths, published_row, published_sinks
from archiver.store.base import Store, caps_of

_SUFFIXES = {suffix: kind for kind, suffix in COMPRESSION_SUFFIX.items()}


class RebuildError(RuntimeError):
    """The manifest cannot be rebuilt as asked; the message says why."""


class _HashingReader:
    """Reads through to ``raw`` while hashing exactly the stored bytes."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.raw.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data

    def close(self) -> None:
        self.raw.close()


def rebuild_manifest(data_dir: Path, store: Store, sink_id: str | None = None, walk: bool = False) -> dict[str, Any]:
    """Write DATA/manifest.sqlite for ``sink_id`` (the only sink, when there is one) from ``store``.
    ``walk`` also walks the tree for the sink's segments its published manifest does not list:
    those uploaded after its last publish, which a lost host never published. The manifest is
    built aside and moved into place whole: a rebuild that fails (a segment the grid cannot
    serve now) leaves nothing, and can simply be run again."""
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    target = data_dir / Manifest.FILENAME
    if target.exists():
        with closing(Manifest(data_dir)) as existing:
            if existing.segment_ids():
                raise RebuildError(f"{data_dir} already has a manifest with segments; rebuild into an empty data dir")
    staging = Path(tempfile.mkdtemp(prefix=".rebuild-", dir=data_dir))
    try:
        result = _rebuild(staging, store, sink_id, walk)
        for journal in ("-wal", "-shm"):  # an empty manifest's, which must not meet the new one
            target.with_name(target.name + journal).unlink(missing_ok=True)
        os.replace(staging / Manifest.FILENAME, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _rebuild(data_dir: Path, store: Store, sink_id: str | None, walk: bool) -> dict[str, Any]:
    manifest = Manifest(data_dir)
    try:
        sinks = {sink.sink_id: sink for sink in published_sinks(store)}
        if sinks:
            chosen = _choose(sorted(sinks), sink_id)
            published = sinks[chosen]
            for entry in published.segments.values():
                row = published_row(entry)
                manifest.add_sealed(row)
                manifest.update_segment(row.id, **{k: getattr(row, k) for k in ("store_path", "read_cap", "verify_cap",
                                                                                  "uploaded_at")})
            for path, caps in published.dirs.items():
                manifest.add_dir(path, None, caps["read_cap"], "")  # no creation known: its lease is due
            if published.chain:
                _carry_on_chain(manifest, store, chosen)
            source, count = "published", len(published.segments)
            if walk:  # a forgotten segment whose unlink failed stays forgotten
                count += _walk(manifest, store, chosen, known=set(published.segments) | published.forgotten)[1]
                source = "published and the tree"
        else:
            chosen, count = _walk(manifest, store, sink_id)
            source = "walk"
        manifest.set_meta("sink_id", chosen)
        if store.location:  # without it, a segment with no local copy could not be read back
            manifest.set_meta("store_url", store.location)
        root = caps_of(store, "/")
        for key, cap in (("write_cap", root.write_cap), ("read_cap", root.read_cap)):
            if cap:  # the write cap only when the store was given by it
                manifest.set_meta(f"root_{key}", cap)
    finally:
        manifest.close()
    return {"sink_id": chosen, "segments": count, "source": source}


def _carry_on_chain(manifest: Manifest, store: Store, sink_id: str) -> None:
    """A new host publishing for this sink goes on with its chain: the rows listed in closed
    files are marked so, and the chain's state (seq, head, the open day) restored, so the next
    publish links to the head instead of starting a second chain."""
    base = published_dir(sink_id)
    closed = sorted(
        ((path, data, ChainFile.from_document(parse_document(data, path)))
         for path, data in ((path, store.read_bytes(path)) for path, _ in chain_paths(store, base))),
        key=lambda item: item[2].seq,
    )
    compacted = {digest for _, _, chain_file in closed for digest in chain_file.compacts}
    listed: dict[str, int] = {}
    dirs: dict[str, str | None] = {}  # path: the read cap the latest file lists
    day_files: list[list[str]] = []
    day, day_prev, head, seq = "", "", "", 0
    for path, data, chain_file in closed:
        if chain_file.kind == "period" and sha256_hex(data) in compacted:
            continue  # compacted into a day file already
        for entry in chain_file.segments:
            listed[entry["id"]] = chain_file.seq
        dirs.update({dir_path: entry.get("read_cap") for dir_path, entry in chain_file.dirs.items()})
        if chain_file.kind == "period":
            if not day_files:
                day_prev = head
            day = path.rsplit("/", 2)[-2]
            day_files.append([path, sha256_hex(data)])
        head = sha256_hex(data)
        seq = chain_file.seq
    for segment, file_seq in listed.items():
        manifest.update_segment(segment, published_seq=file_seq)
    manifest.mark_published([], [], dirs, seq, {
        "chain_seq": str(seq), "chain_head": head, "chain_day": day,
        "chain_day_files": orjson.dumps(day_files).decode(), "chain_day_prev": day_prev,
    })


def _choose(sinks: list[str], wanted: str | None) -> str:
    if wanted is not None:
        if wanted not in sinks:
            raise RebuildError(f"no published manifest for sink {wanted!r} (found: {', '.join(sinks) or 'none'})")
        return wanted
    if len(sinks) != 1:
        raise RebuildError(f"several sinks publish to this root ({', '.join(sinks)}): choose one with --sink-id")
    return sinks[0]


def _walk(manifest: Manifest, store: Store, wanted: str | None, known: set[str] | None = None) -> tuple[str, int]:
    """Find every segment file of the sink and read it back to recount it: all of them when
    there is no published manifest, else those not ``known`` to it."""
    found: dict[str, list[tuple[str, str, str, str]]] = {}
    for path in store.walk_files("/", exclude=(MANIFEST_DIR,)):
        name = path.rsplit("/", 1)[1]
        suffix = next((s for s in _SUFFIXES if name.endswith(s)), None)
        match = SEGMENT_ID.fullmatch(name[: -len(suffix)]) if suffix else None
        if match is None or suffix is None:
            continue
        stream = path.strip("/").split("/", 1)[0]
        if known is None or name[: -len(suffix)] not in known:
            found.setdefault(match.group(2), []).append((path, name[: -len(suffix)], stream, _SUFFIXES[suffix]))
    if known is not None and wanted not in found:
        return wanted or "", 0
    chosen = _choose(sorted(found), wanted)
    levels = {level for path, *_ in found[chosen] for level in levels_of(path.rsplit("/", 1)[0])}
    for level in sorted(levels):
        caps = caps_of(store, level)
        manifest.add_dir(level, caps.write_cap, caps.read_cap, format_ts(time.time()))
    for path, segment, stream, compression in found[chosen]:
        hashing = _HashingReader(store.open(path))
        tally = SegmentTally()
        with open_compressed(hashing, compression) as lines:  # type: ignore[arg-type]
            for line in lines:
                tally.add(line)
        caps = caps_of(store, path)
        manifest.add_sealed(tally.row(segment, stream, "", compression, hashing.size, hashing.sha256.hexdigest()))
        manifest.update_segment(
            segment, state="uploaded", store_path=path, read_cap=caps.read_cap, verify_cap=caps.verify_cap,
        )
    return chosen, len(found[chosen])

