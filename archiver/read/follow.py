"""Following a running sink like ``tail -f`` (``archiver cat --follow``): its sealed segments,
then the records of its open segments once they are durable, then whatever comes next.

The sink says how far each open segment is fsynced (``GET /_durable``); only lines up to there
are shown, so nothing shown can be lost by a crash. A segment read while open is remembered by
the bytes already shown: once sealed, its sealed copy is read past them, so each record is
shown once, in the order it was written to its segment.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import orjson

from archiver.format.segment import open_compressed
from archiver.read.reader import Archive, Filters

# (stream, segment id, bytes fsynced) of each open segment, as GET /_durable answers.
Watermark = Callable[[], list[dict[str, Any]]]


class Follower:
    """Each :meth:`poll` yields the matching lines made durable since the last one."""

    def __init__(self, archive: Archive, wanted: Filters, watermark: Watermark) -> None:
        if archive.data_dir is None:
            raise ValueError("following needs the sink's data dir")
        self.archive = archive
        self.data_dir = archive.data_dir
        self.wanted = wanted
        self._watermark = watermark
        self._sealed: set[str] = set()  # read whole
        self._shown: dict[str, int] = {}  # open segments: bytes read so far

    def poll(self) -> Iterator[bytes]:
        # The marks first: a segment sealed after them is in the manifest by the next poll.
        marks = self._watermark()
        for row in self.archive.segments(self.wanted.stream, self.wanted.since, self.wanted.until):
            if row.id not in self._sealed:
                with open_compressed(self.archive.open_segment(row), row.compression) as lines:
                    yield from self._matching(lines, self._shown.pop(row.id, 0))
                self._sealed.add(row.id)
        for mark in marks:
            if mark["segment"] in self._sealed or self.wanted.stream not in (None, mark["stream"]):
                continue
            yield from self._open_lines(mark["stream"], mark["segment"], mark["durable"])

    def _open_lines(self, stream: str, segment: str, durable: int) -> Iterator[bytes]:
        start = self._shown.get(segment, 0)
        try:
            with open(self.data_dir.open_path(stream, segment), "rb") as handle:
                handle.seek(start)
                data = handle.read(max(durable - start, 0))
        except FileNotFoundError:
            return  # sealed since the marks were taken: read from its sealed copy next poll
        whole = data[: data.rfind(b"\n") + 1]
        self._shown[segment] = start + len(whole)
        yield from self._matching([line + b"\n" for line in whole.split(b"\n")[:-1]], 0)

    def _matching(self, lines: Iterable[bytes], skip: int) -> Iterator[bytes]:
        """The lines past the first ``skip`` bytes (already shown) that match."""
        for line in lines:
            if skip > 0:
                skip -= len(line)
                continue
            if self.wanted.matches(orjson.loads(line)):
                yield line
