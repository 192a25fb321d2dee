"""The decoder's worker processes: heavy inputs leave the sink's process, and a dead worker
costs one retry, not the sink."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Awaitable, Callable

import orjson
import psutil
import pytest

from archiver.format.record import Context
from archiver.ingest.decode.result import DecodeError
from archiver.ingest.decoder import Decoder, decode_request, decode_tcp
from archiver.ingest.workers import WorkerDied

CTX = Context("app", "127.0.0.1", 1_795_467_684.0)

def with_decoder(workers: int, body: Callable[[Decoder], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        decoder = Decoder(workers)
        await decoder.start()
        try:
            return await body(decoder)
        finally:
            await decoder.close()

    return asyncio.run(main())


def test_heavy_input_is_decoded_in_a_worker_and_comes_back_encoded() -> None:
    body = b"\n".join(orjson.dumps({"message": f"m{n}", "level": "warn", "ts": 1_795_467_684 + n}) for n in range(3000))

    async def run(decoder: Decoder) -> tuple[Any, int, int]:
        batch = await decoder.run(True, decode_request, "POST", body, None, 10**8, CTX)
        return batch, await decoder.run(True, os.getpid), await decoder.run(False, os.getpid)

    batch, heavy_pid, light_pid = with_decoder(1, run)
    assert heavy_pid != os.getpid() and light_pid == os.getpid()
    [(stream, lines)] = batch.streams.items()
    records = [orjson.loads(line) for line in lines.data.splitlines()]
    assert stream == "app" and batch.count == lines.count == 3000 and not batch.rejected
    assert [r["message"] for r in records] == [f"m{n}" for n in range(3000)]
    assert lines.levels == {"WARNING": 3000} and (lines.first_ts, lines.last_ts) == (records[0]["ts"], records[-1]["ts"])


def test_a_dead_worker_is_replaced_and_the_input_tried_again() -> None:
    async def run(decoder: Decoder) -> tuple[int, int]:
        worker = psutil.Process(await decoder.run(True, os.getpid))
        worker.kill()
        worker.wait(10)
        batch = await decoder.run(True, decode_request, "POST", b'{"message": "after"}', None, 10**6, CTX)
        return batch.count, decoder.restarts

    assert with_decoder(1, run) == (1, 1)


def test_an_input_that_kills_every_worker_fails_and_the_next_one_works() -> None:
    async def run(decoder: Decoder) -> int:
        with pytest.raises(WorkerDied):
            await decoder.run(True, os.abort)
        assert await decoder.run(True, os.getpid) in decoder.pids()
        return decoder.restarts

    assert with_decoder(1, run) == 2


def test_errors_come_back_as_raised_and_calls_are_answered_in_order() -> None:
    async def run(decoder: Decoder) -> list[Any]:
        calls = [decoder.run(True, decode_request, "POST", b"{bad", None, 10**6, CTX)]
        calls += [decoder.run(True, decode_request, "POST", b'{"n": %d}' % n, None, 10**6, CTX) for n in range(50)]
        return await asyncio.gather(*calls, return_exceptions=True)

    bad, *good = with_decoder(2, run)
    assert isinstance(bad, DecodeError) and "invalid JSON" in str(bad)
    assert [orjson.loads(batch.streams["app"].data)["fields"]["n"] for batch in good] == list(range(50))


def test_without_workers_heavy_input_is_decoded_on_a_thread() -> None:
    async def run(decoder: Decoder) -> int:
        return await decoder.run(True, os.getpid)

    assert with_decoder(0, run) == os.getpid()


def test_input_in_hand_when_the_workers_stop_is_still_decoded() -> None:
    """A request still decoding as the sink stops must not be refused as undecodable."""
    body = b'{"message": "late"}'

    async def main() -> tuple[int, int]:
        decoder = Decoder(1)
        await decoder.start()
        await decoder.close()
        batch = await decoder.run(True, decode_request, "POST", body, None, 10**6, CTX)
        return batch.count, await decoder.run(True, os.getpid)

    assert asyncio.run(main()) == (1, os.getpid())


def test_input_whose_worker_is_stopped_mid_call_is_decoded_on_a_thread() -> None:
    async def main() -> None:
        decoder = Decoder(1)
        await decoder.start()
        call = asyncio.create_task(decoder.run(True, time.sleep, 2.0))
        await asyncio.sleep(0.5)  # the worker is in the call
        await decoder.close(timeout=0.1)  # and is killed in it: the call ends on a thread
        assert await call is None

    asyncio.run(main())


def test_tcp_lines_are_routed_by_their_stream_field() -> None:
    data = b'{"message": "a", "app": "billing"}\n{"message": "b", "app": "../x"}\n{"message": "c"}\n[1]\n'
    batch = decode_tcp(data, Context("tcp", None, 0), "app")
    assert {stream: lines.count for stream, lines in batch.streams.items()} == {"billing": 1, "tcp": 2}
    assert orjson.loads(batch.streams["billing"].data)["stream"] == "billing"
    assert [item.raw for item in batch.rejected] == [b"[1]"]
