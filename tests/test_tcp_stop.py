"""Stopping the TCP source: a sender that sees a clean EOF has every line it sent archived;
whatever the stop could not make durable ends in a reset."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest
from test_tcp_and_clients import tcp_address

from archiver import open_archive
from archiver.format.layout import DataDir
from archiver.ingest import tcp
from archiver.ingest.decoder import Decoder
from archiver.ingest.tcp import TcpSettings, TcpSource
from archiver.spool.rotation import RotationPolicy
from archiver.spool.writer import SegmentWriter
from conftest import Sink

LINES = b"".join(orjson.dumps({"message": f"line {n}"}) + b"\n" for n in range(2000))


class GatedDecoder(Decoder):
    """Decodes nothing until ``gate`` opens, so lines are read but not yet durable while the
    test stops the source."""

    def __init__(self) -> None:
        super().__init__(0)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def run(self, heavy: bool, decode: Callable[..., Any], *args: Any) -> Any:
        self.entered.set()
        await self.gate.wait()
        return await super().run(heavy, decode, *args)


async def _stop_while_decoding(
    data_dir: Path, payload: bytes, *, half_close: bool, open_gate: bool, timeout: float | None = None
) -> bool:
    """Send ``payload``, stop the source while its first block is being decoded, and read to
    the end: True for a clean EOF, False for a reset. The writer is closed (sealed) after."""
    writer = SegmentWriter(DataDir(data_dir), "sinkA", RotationPolicy(10**9, 10**9, 3600))
    await writer.start()
    decoder = GatedDecoder()
    source = TcpSource(writer, TcpSettings(), decoder)
    host, port = await source.start("127.0.0.1", 0)
    reader, sender = await asyncio.open_connection(host, port)
    sender.write(payload)
    await sender.drain()
    if half_close:
        sender.write_eof()
    await decoder.entered.wait()
    closing = asyncio.create_task(source.close() if timeout is None else source.close(timeout))
    await asyncio.sleep(0)  # close() has begun: the source is stopping
    if open_gate:
        decoder.gate.set()
    try:
        clean = await reader.read() == b""
    except ConnectionResetError:
        clean = False
    await closing
    sender.close()
    await writer.close()
    return clean


def _messages(data_dir: Path, stream: str = "tcp") -> list[str]:
    return [record["message"] for record in open_archive(data_dir).records(stream)]


def test_lines_being_decoded_at_stop_are_archived_before_the_clean_eof(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    clean = asyncio.run(_stop_while_decoding(tmp_path / "data", LINES, half_close=True, open_gate=True))
    assert clean
    assert _messages(tmp_path / "data") == [f"line {n}" for n in range(2000)]


def test_a_sender_that_has_not_half_closed_is_reset_at_stop(tmp_path: Path) -> None:
    """It might send more: a FIN would tell it lines are archived that the sink never read. What
    was readable is archived all the same, an unfinished last line raw in _rejected."""
    (tmp_path / "data").mkdir()
    clean = asyncio.run(_stop_while_decoding(tmp_path / "data", LINES + b'{"message": "unfin', half_close=False,
                                             open_gate=True))
    assert not clean
    assert _messages(tmp_path / "data") == [f"line {n}" for n in range(2000)]
    rejected = list(open_archive(tmp_path / "data").records("_rejected"))
    assert [(r["fields"]["raw"], r["fields"]["reason"]) for r in rejected] == [
        ('{"message": "unfin', "line unfinished when the sink stopped")
    ]


def test_a_stop_that_cannot_finish_in_time_resets(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    clean = asyncio.run(_stop_while_decoding(tmp_path / "data", LINES, half_close=True, open_gate=False, timeout=0.2))
    assert not clean


class ShuffledDecoder(Decoder):
    """Decodes each read after a random delay, so later reads finish first, and notes how many
    were decoding at once."""

    def __init__(self) -> None:
        super().__init__(0)
        self.rng = random.Random(3)
        self.decoding = self.most = 0

    async def run(self, heavy: bool, decode: Callable[..., Any], *args: Any) -> Any:
        self.decoding += 1
        self.most = max(self.most, self.decoding)
        await asyncio.sleep(self.rng.random() / 200)
        self.decoding -= 1
        return await super().run(heavy, decode, *args)


def test_reads_decoded_out_of_order_are_archived_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection's next reads decode while one is committed, and the lines are archived in
    the order they were sent whichever decode finishes first."""
    monkeypatch.setattr(tcp, "READ_SIZE", 4096)  # a hundred reads or so
    decoder = ShuffledDecoder()

    async def main() -> bool:
        writer = SegmentWriter(DataDir(tmp_path), "sinkA", RotationPolicy(10**9, 10**9, 3600))
        await writer.start()
        source = TcpSource(writer, TcpSettings(), decoder)
        host, port = await source.start("127.0.0.1", 0)
        reader, sender = await asyncio.open_connection(host, port)
        sender.write(LINES * 3)
        sender.write_eof()
        clean = await reader.read() == b""
        sender.close()
        await source.close()
        await writer.close()
        return clean

    assert asyncio.run(main())
    assert decoder.most == tcp.AHEAD + 1
    assert _messages(tmp_path) == [f"line {n}" for n in range(2000)] * 3


def test_a_quiet_sender_s_lines_are_durable_before_more_arrive(tmp_path: Path) -> None:
    """A line and then silence, the connection left open (as a log daemon's at a low rate):
    the line is made durable without waiting for the reads that would fill the pipeline. The
    sender's EOF, with nothing left in hand, closes cleanly without another fsync round."""

    async def main() -> None:
        writer = SegmentWriter(DataDir(tmp_path), "sinkA", RotationPolicy(10**9, 10**9, 3600))
        await writer.start()
        source = TcpSource(writer, TcpSettings(), Decoder(0))
        host, port = await source.start("127.0.0.1", 0)
        reader, sender = await asyncio.open_connection(host, port)
        for n in range(2):
            sender.write(orjson.dumps({"message": f"quiet {n}"}) + b"\n")
            await sender.drain()
            for _ in range(500):
                if writer.stats.commits_waited > n:
                    break
                await asyncio.sleep(0.01)
            assert writer.stats.commits_waited == n + 1, "the line waits for more input"
            assert writer.spool_bytes > 0
        sender.write_eof()
        assert await reader.read() == b""
        assert writer.stats.commits_waited == 2
        sender.close()
        await source.close()
        await writer.close()

    asyncio.run(main())
    assert _messages(tmp_path) == ["quiet 0", "quiet 1"]


class Sender(threading.Thread):
    """Sends numbered lines in blocks, half-closes, and reads to the end of the connection."""

    BLOCK = 64 * 1024

    def __init__(self, address: tuple[str, int], name: str, count: int, sent: Callable[[int], None]) -> None:
        super().__init__()
        self.address = address
        self.lines = [f"{name} {n}" for n in range(count)]
        self.payload = b"".join(orjson.dumps({"message": line}) + b"\n" for line in self.lines)
        self.sent = sent
        self.clean: bool | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with socket.create_connection(self.address, timeout=60) as conn:
                for start in range(0, len(self.payload), self.BLOCK):
                    conn.sendall(self.payload[start : start + self.BLOCK])
                    self.sent(min(self.BLOCK, len(self.payload) - start))
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):
                    pass
                self.clean = True
        except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
            self.clean = False
        except BaseException as err:  # noqa: BLE001 - reported by the test
            self.error = err


def test_a_clean_eof_means_every_line_is_archived_whenever_the_sink_stops(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Rounds of concurrent senders, each sink stopped (SIGTERM) after a different share of
    their bytes was sent: from before the first is read to after the last half-closed."""
    data_dir = tmp_path / "data"
    rng = random.Random(13)
    clean: list[Sender] = []
    resets = 0
    for round_ in range(15):
        sink: Sink = start_sink(data_dir, "--tcp-port", "0")
        sent = 0
        lock = threading.Condition()

        def count(size: int) -> None:
            nonlocal sent
            with lock:
                sent += size
                lock.notify_all()

        senders = [Sender(tcp_address(sink), f"r{round_}s{s}", rng.choice([1000, 10000, 50000]), count) for s in range(4)]
        total = sum(len(sender.payload) for sender in senders)
        stop_at = total * rng.choice([0.0, 0.1, 0.5, 0.9, 1.0])
        for sender in senders:
            sender.start()
        with lock:
            lock.wait_for(lambda: sent >= stop_at, timeout=60)
        assert sink.stop() == 0, sink.log_text()
        for sender in senders:
            sender.join(60)
            assert sender.clean is not None, f"{sender.name} did not end: {sender.error!r}"
        clean += [sender for sender in senders if sender.clean]
        resets += sum(1 for sender in senders if not sender.clean)
    archived = {record["message"] for record in open_archive(data_dir).records("tcp")}
    for sender in clean:
        missing = [line for line in sender.lines if line not in archived]
        assert not missing, f"clean EOF, yet {len(missing)} of {len(sender.lines)} lines missing, such as {missing[:3]}"
    assert clean and resets, (len(clean), resets)  # both ends were exercised
