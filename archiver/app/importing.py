"""Where ``archiver import`` sends its batches: the data dir's own spool when no sink runs on
it (the import holds the sink's lock meanwhile, so no sink starts under it), else the running
sink, through its ``/_admin/import`` route. Never two writers on one spool."""

from __future__ import annotations

import contextlib
from typing import AsyncIterator, Callable

import aiohttp
import orjson

from archiver.app.config import Config
from archiver.app.service import PidLock, StartupError, prepare_data_dir, sink_identity
from archiver.format.manifest import ImportPosition
from archiver.ingest.importer import ImportTarget
from archiver.spool.imports import ImportBatch, ImportSpool, PositionMoved, batch_to_wire
from archiver.spool.rotation import RotationPolicy
from archiver.spool.writer import SegmentWriter

IMPORT_ROUTE = "/_admin/import"


class ImportFailed(RuntimeError):
    """The import cannot go on; the message says why."""


class SinkTarget:
    """A running sink, by its ``/_admin/import`` route (admin.token, or loopback)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url + IMPORT_ROUTE
        self.session = aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=600))

    async def position(self, head: bytes) -> ImportPosition:
        return ImportPosition(**orjson.loads(await self._post(head, {"position": "1"})))

    async def append(self, batch: ImportBatch) -> None:
        await self._post(batch_to_wire(batch), {})

    async def _post(self, body: bytes, params: dict[str, str]) -> bytes:
        try:
            async with self.session.post(self.url, data=body, params=params) as response:
                answer = await response.read()
        except aiohttp.ClientError as err:
            raise ImportFailed(f"the sink at {self.url} did not answer: {err}") from None
        if response.status == 409:
            raise PositionMoved(answer.decode(errors="replace").strip().removeprefix("error: "))
        if response.status != 200:
            raise ImportFailed(f"{IMPORT_ROUTE} failed ({response.status}): {answer.decode(errors='replace').strip()}")
        return answer

    async def close(self) -> None:
        await self.session.close()


@contextlib.asynccontextmanager
async def local_spool(config: Config) -> AsyncIterator[ImportSpool]:
    """The data dir's spool, written as the sink would (its lock held by the caller); every
    segment is sealed at the end, and the sink uploads it when it next runs."""
    data = prepare_data_dir(config.data_dir.resolve())
    segments = config.segments
    writer = SegmentWriter(
        data, sink_identity(data.root, config.sink_id),
        RotationPolicy(segments.max_bytes, segments.max_records, segments.max_age),
        fsync="always", compression=segments.compression, compression_level=segments.compression_level,
        spool_limit=config.spool.max_bytes,
    )
    await writer.start()
    spool = ImportSpool(writer, data.root)
    try:
        yield spool
    finally:
        failures = await writer.close()
        spool.close()
    if failures:
        where = "; ".join(f"{f.segment.stream}/{f.segment.id} ({f.error})" for f in failures)
        raise ImportFailed(f"imported records are durable in the open spool, but could not be sealed: {where}")


@contextlib.asynccontextmanager
async def import_target(
    config: Config, find_sink: Callable[[], str | None], headers: dict[str, str],
) -> AsyncIterator[tuple[ImportTarget, str]]:
    """The spool (and ``"local"``) when the data dir's lock is free, else the running sink
    (and its URL) that ``find_sink`` names."""
    data = prepare_data_dir(config.data_dir.resolve())
    lock = PidLock(data.pid_file)
    try:
        lock.acquire()
    except StartupError as held:
        url = find_sink()
        if url is None:
            raise ImportFailed(f"{held}; it serves no HTTP (another import?)") from None
        target = SinkTarget(url, headers)
        try:
            yield target, url
        finally:
            await target.close()
        return
    try:
        async with local_spool(config) as spool:
            yield spool, "local"
    finally:
        lock.release()
