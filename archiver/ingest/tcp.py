"""The TCP source: newline-delimited JSON objects (syslog-ng network() with format-json,
rsyslog omfwd with a JSON template), one record a line.

Same records and durability as HTTP: what is read is decoded, appended and committed before
more is read, so a slow disk or a full spool slows the sender through TCP flow control instead
of filling memory. A line that is not a JSON object goes raw to ``_rejected``. TCP has no
acknowledgements: a sender that reconnects may resend what was in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from ..records import REJECTED_STREAM, SOURCE_TCP, Context, Rejected, rejected_record
from ..segments import SegmentWriter
from .decoder import OFFLOAD_BYTES, Batch, Decoder, decode_tcp

log = logging.getLogger(__name__)
READ_SIZE = 256 * 1024
SPOOL_FULL_PAUSE = 0.5


@dataclass(frozen=True)
class TcpSettings:
    stream: str = "tcp"
    stream_field: str = ""  # take each record's stream from this field when it is a valid name
    max_line_bytes: int = 1024 * 1024


class TcpSource:
    """One listener; ``start`` binds it, ``close`` stops accepting and ends open connections."""

    def __init__(self, writer: SegmentWriter, settings: TcpSettings, decoder: Decoder | None = None) -> None:
        self.writer = writer
        self.settings = settings
        self.decoder = decoder or Decoder(0)
        self.server: asyncio.Server | None = None
        self.records = 0
        self.rejected = 0
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve, host, port, reuse_address=True, limit=READ_SIZE)
        address = self.server.sockets[0].getsockname()
        return address[0], address[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        peer_host = peer[0] if peer else None
        pending = b""
        try:
            while True:
                while self.writer.over_limit():  # stop reading: TCP flow control holds the sender
                    await asyncio.sleep(SPOOL_FULL_PAUSE)
                chunk = await reader.read(READ_SIZE)
                if not chunk:
                    break
                data = pending + chunk
                cut = data.rfind(b"\n") + 1
                pending = data[cut:]
                if len(pending) > self.settings.max_line_bytes:
                    await self._archive(Batch(SOURCE_TCP, {}, [Rejected("line longer than max_line_bytes", pending)]), peer_host)
                    pending = b""
                if cut:
                    await self._ingest(data[:cut], peer_host)
            if pending.strip():
                await self._ingest(pending + b"\n", peer_host)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, OSError) as err:
            log.info("tcp connection from %s ended: %s", peer_host, err)
        finally:
            self._connections.discard(task)
            writer.close()

    async def _ingest(self, data: bytes, peer: str | None) -> None:
        ctx = Context(self.settings.stream, peer, time.time())
        try:
            batch = await self.decoder.run(len(data) >= OFFLOAD_BYTES, decode_tcp, data, ctx, self.settings.stream_field)
        except Exception as err:  # a decoding bug must not lose the lines: keep them raw
            log.exception("decoding %d bytes from %s failed", len(data), peer)
            batch = Batch(SOURCE_TCP, {}, [Rejected(f"could not be decoded ({type(err).__name__})", data)])
        await self._archive(batch, peer)

    async def _archive(self, batch: Batch, peer: str | None) -> None:
        for stream, lines in batch.streams.items():
            self.writer.write_lines(stream, lines)
        ctx = Context(self.settings.stream, peer, time.time())
        meta = {"target_stream": self.settings.stream, "transport": "tcp"}
        self.writer.write_records(REJECTED_STREAM, [rejected_record(item, ctx, "tcp", meta) for item in batch.rejected])
        await self.writer.commit()
        self.records += batch.count
        self.rejected += len(batch.rejected)
