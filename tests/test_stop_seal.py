"""A clean stop seals everything it acknowledged, or says which segment it could not seal.

Failpoints (archiver/failpoints.py) make each race deterministic: a slow fsync round, a seal
that fails once or always, a failing HTTP cleanup.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
import requests

from archiver.format.layout import DataDir
from archiver.spool.rotation import RotationPolicy
from archiver.spool.writer import SegmentWriter
from conftest import Sink, cat_json
from test_segments import LOOSE, all_messages, line, sealed


def open_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "spool" / "open").glob("*/*.jsonl"))


def test_close_waits_for_a_segment_retired_while_its_fsync_round_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The segment is neither open nor sealing: only the running round knows it."""
    monkeypatch.setenv("ARCHIVER_FAILPOINTS", "fsync-round=sleep:0.15")

    async def main() -> None:
        writer = SegmentWriter(DataDir(tmp_path), "sink1", RotationPolicy(10**9, 3, 3600))
        await writer.start()
        for n in range(3):
            writer.write("app", line(n), 1)  # the third fills the segment: retired, a round starts
        assert not writer._open
        await writer.close()

    asyncio.run(main())
    assert open_files(tmp_path) == []
    assert all_messages(tmp_path) == ["m0", "m1", "m2"]


def test_a_seal_that_fails_while_running_is_retried_and_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHIVER_FAILPOINTS", "seal=fail-once")
    seen: dict[str, object] = {}

    async def main() -> None:
        writer = SegmentWriter(DataDir(tmp_path), "sink1", RotationPolicy(10**9, 2, 3600))
        await writer.start()
        writer.write("app", line(0), 1)
        writer.write("app", line(1), 1)
        await writer.commit()
        while not writer.stats.seal_errors:
            await asyncio.sleep(0.01)
        seen["failed"] = writer.status()["seal_failed"]
        while not writer.stats.segments_sealed:  # the retry, after its backoff, with no flush
            await asyncio.sleep(0.05)
        seen["after"] = writer.status()["seal_failed"]
        await writer.close()

    asyncio.run(main())
    failed = seen["failed"]
    assert isinstance(failed, list) and len(failed) == 1
    assert failed[0]["stream"] == "app" and failed[0]["attempts"] == 1 and "failpoint seal" in failed[0]["error"]
    assert failed[0]["path"].endswith(".jsonl") and "spool/open/app" in failed[0]["path"]
    assert seen["after"] == []
    assert open_files(tmp_path) == [] and len(sealed(tmp_path)) == 1


def test_a_flush_cancelled_midway_never_cancels_the_seals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/_admin/flush cut off at stop must not leave a sealed-but-not-unlinked segment behind."""
    monkeypatch.setenv("ARCHIVER_FAILPOINTS", "seal=sleep:0.3")

    async def main() -> None:
        writer = SegmentWriter(DataDir(tmp_path), "sink1", LOOSE)
        await writer.start()
        writer.write("app", line(0), 1)
        await writer.commit()
        flushing = asyncio.create_task(writer.flush())
        while not writer._sealer.in_progress():
            await asyncio.sleep(0.01)
        flushing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await flushing
        assert await writer.close() == []

    asyncio.run(main())
    assert open_files(tmp_path) == []
    assert all_messages(tmp_path) == ["m0"]


def _post_one(sink: Sink, message: str) -> None:
    answer = requests.post(sink.url + "/app", data={"msg": message, "levelname": "INFO"}, timeout=30)
    assert answer.status_code == 200


def test_a_seal_that_fails_at_stop_exits_non_zero_naming_the_segment(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sink = Sink(data, env={"ARCHIVER_FAILPOINTS": "seal=fail"}).start()
    try:
        _post_one(sink, "kept")
        status = requests.get(sink.url + "/_status", timeout=30).json()
        assert status["seal_failed"] == [] and status["seal_errors"] == 0
    finally:
        assert sink.proc is not None
        sink.proc.send_signal(signal.SIGTERM)
        code = sink.proc.wait(60)
    leftover = open_files(data)
    assert code == 1
    assert len(leftover) == 1
    log = sink.log_text()
    assert f"app/{leftover[0].stem} in {leftover[0]}" in log and "could not be sealed at stop" in log
    # The records were durable all along: the next start seals them.
    again = Sink(data).start()
    try:
        assert again.stop() == 0
    finally:
        again.kill()
    assert open_files(data) == []
    assert [r["message"] for r in cat_json(data, "--stream", "app")] == ["kept"]


def test_a_failing_http_cleanup_still_seals_and_fails_the_exit(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sink = Sink(data, env={"ARCHIVER_FAILPOINTS": "http-cleanup=fail"}).start()
    try:
        _post_one(sink, "sealed anyway")
    finally:
        code = sink.stop(60)
    assert code != 0 and "failpoint http-cleanup" in sink.log_text()
    assert open_files(data) == []
    assert [r["message"] for r in cat_json(data, "--stream", "app")] == ["sealed anyway"]
    assert not (data / "sink.json").exists()


def test_a_stop_during_a_slow_fsync_round_seals_every_acknowledged_record(tmp_path: Path) -> None:
    """Age rotation retires segments while rounds are slow; SIGTERM lands among them."""
    data = tmp_path / "data"
    config = tmp_path / "sink.toml"
    config.write_text('[segments]\nmax_age = "0.2s"\n')
    sink = Sink(data, ["-c", str(config)], env={"ARCHIVER_FAILPOINTS": "fsync-round=sleep:0.15"}).start()
    sent = []
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            message = f"n{len(sent)}"
            _post_one(sink, message)
            sent.append(message)
    finally:
        code = sink.stop(60)
    assert code == 0
    assert open_files(data) == []
    assert sorted(r["message"] for r in cat_json(data, "--stream", "app")) == sorted(sent)
