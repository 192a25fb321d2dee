"""Reading archives back: from a data dir (the local manifest and spool) or from a store URL
holding a root capability, read-only caps included (the published manifests).

Time bounds are ``since`` inclusive and ``until`` exclusive, compared on the record's ``ts``.
#5 grows this into the full reader (filters, restore, verify).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson
from fs.base import FS

from .layout import DataDir
from .manifest import Manifest, SegmentRow, parse_published
from .sealing import open_compressed, open_sealed
from .uploader import MANIFEST_DIR

_ROW_FIELDS = {f.name for f in fields(SegmentRow)}


def _overlaps(row: SegmentRow, stream: str | None, since: str | None, until: str | None) -> bool:
    if stream is not None and row.stream != stream:
        return False
    if since is not None and (row.last_ts or "") < since:
        return False
    return until is None or (row.first_ts or "") < until


def _records(sources: Iterable[Iterator[bytes]], since: str | None, until: str | None) -> Iterator[dict[str, Any]]:
    for lines in sources:
        for line in lines:
            record = orjson.loads(line)
            ts = record["ts"]
            if (since is None or ts >= since) and (until is None or ts < until):
                yield record


@dataclass
class Archive:
    """One sink's archive as its data dir knows it."""

    data_dir: DataDir

    def streams(self) -> list[str]:
        return sorted({row.stream for row in self.segments()})

    def segments(
        self, stream: str | None = None, since: str | None = None, until: str | None = None
    ) -> list[SegmentRow]:
        """Sealed segments overlapping [since, until), from the manifest alone."""
        manifest = Manifest(self.data_dir.root)
        try:
            return list(manifest.segments(stream, since, until))
        finally:
            manifest.close()

    def records(
        self,
        stream: str | None = None,
        since: str | None = None,
        until: str | None = None,
        include_open: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Records of the matching segments, segment by segment, decompressed on the fly."""
        sources: list[Iterator[bytes]] = [
            _sealed_lines(self.data_dir.root / row.local_path, row.compression)
            for row in self.segments(stream, since, until)
        ]
        if include_open:
            sources += [
                _whole_lines(path)
                for seg_stream, _, path in self.data_dir.open_segments()
                if stream is None or seg_stream == stream
            ]
        return _records(sources, since, until)


@dataclass
class StoreArchive:
    """Every sink's archive under one store root, from the published manifests."""

    store: FS

    def published(self) -> list[dict[str, Any]]:
        """The published manifests of every sink sharing this root."""
        if not self.store.isdir(MANIFEST_DIR):
            return []
        documents = []
        for name in sorted(self.store.listdir(MANIFEST_DIR)):
            if name.endswith(".json"):
                path = f"{MANIFEST_DIR}/{name}"
                documents.append(parse_published(self.store.readbytes(path), path))
        return documents

    def streams(self) -> list[str]:
        return sorted({row.stream for row in self.segments()})

    def segments(
        self, stream: str | None = None, since: str | None = None, until: str | None = None
    ) -> list[SegmentRow]:
        rows = [published_row(entry) for document in self.published() for entry in document["segments"]]
        rows = [row for row in rows if _overlaps(row, stream, since, until)]
        return sorted(rows, key=lambda row: (row.first_ts or "", row.id))

    def records(
        self, stream: str | None = None, since: str | None = None, until: str | None = None, include_open: bool = False
    ) -> Iterator[dict[str, Any]]:
        sources = (self._lines(row) for row in self.segments(stream, since, until))
        return _records(sources, since, until)

    def _lines(self, row: SegmentRow) -> Iterator[bytes]:
        assert row.store_path is not None
        with open_compressed(self.store.openbin(row.store_path), row.compression) as stream:
            yield from stream


def published_row(entry: dict[str, Any]) -> SegmentRow:
    """A manifest row from a published segment entry (it has no local copy)."""
    values = {key: value for key, value in entry.items() if key in _ROW_FIELDS}
    return SegmentRow(**{"local_path": "", **values})


def _sealed_lines(path: Path, compression: str) -> Iterator[bytes]:
    with open_sealed(path, compression) as stream:
        yield from stream


def _whole_lines(path: Path) -> Iterator[bytes]:
    """An open segment's complete lines; a line still being written is left for later."""
    try:
        with open(path, "rb") as handle:
            for line in handle:
                if line.endswith(b"\n"):
                    yield line
    except FileNotFoundError:  # sealed meanwhile
        return


def open_archive(source: str | Path) -> Archive | StoreArchive:
    """An archive from a data dir, a config file naming one, or a store URL with a root cap."""
    text = str(source)
    if "://" in text:
        from .store import open_store

        return StoreArchive(open_store(text))
    path = Path(source)
    if path.is_file():
        from .config import load_config

        path = load_config(path).data_dir
    if not (path / Manifest.FILENAME).exists():
        raise FileNotFoundError(f"{path} is not an archiver data dir (no {Manifest.FILENAME})")
    return Archive(DataDir(path))


