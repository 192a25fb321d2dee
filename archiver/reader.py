"""Reading archives back. For now: the local spool of one data dir (sealed segments from the
manifest, and open segments on request); #5 extends this to the store and read caps.

Time bounds are ``since`` inclusive and ``until`` exclusive, compared on the record's ``ts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import orjson

from .layout import DataDir
from .manifest import Manifest, SegmentRow
from .sealing import open_sealed


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
        for lines in sources:
            for line in lines:
                record = orjson.loads(line)
                ts = record["ts"]
                if (since is None or ts >= since) and (until is None or ts < until):
                    yield record


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


def open_archive(source: str | Path) -> Archive:
    """An Archive from a data dir or a config file naming one."""
    path = Path(source)
    if path.is_file():
        from .config import load_config

        path = load_config(path).data_dir
    if not (path / Manifest.FILENAME).exists():
        raise FileNotFoundError(f"{path} is not an archiver data dir (no {Manifest.FILENAME})")
    return Archive(DataDir(path))

