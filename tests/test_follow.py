"""`archiver cat --follow` on a running sink: records show once they are durable, each once, in
order, across segments sealed while following."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import requests

from archiver.format.layout import DataDir
from archiver.format.manifest import Manifest
from archiver.read.follow import Follower
from archiver.read.reader import Filters, data_dir_archive
from conftest import wait_until


def _ctrl_c_as_from_a_terminal() -> None:
    """A shell without job control (a CI script run in the background) starts its children with
    SIGINT ignored, and Python then never raises KeyboardInterrupt: give the follower the
    disposition a terminal gives it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_only_durable_lines_are_shown(tmp_path: Path) -> None:
    Manifest(tmp_path).close()
    data_dir = DataDir(tmp_path)
    path = data_dir.open_path("app", "20261123T100000Z-sinkA-000001")
    path.parent.mkdir(parents=True)
    lines = [orjson.dumps({"ts": "2026-11-23T10:00:00.000000Z", "level": "INFO", "message": f"m{n}"}) + b"\n"
             for n in range(3)]
    path.write_bytes(b"".join(lines) + b'{"ts": "2026-11-23T10:00:0')  # a line being written
    durable = [len(lines[0]) + 5]
    mark = lambda: [{"stream": "app", "segment": path.name[:-len(".jsonl")], "durable": durable[0]}]  # noqa: E731
    follower = Follower(data_dir_archive(data_dir), Filters(), mark)
    assert list(follower.poll()) == lines[:1]
    assert list(follower.poll()) == []
    durable[0] = path.stat().st_size
    assert list(follower.poll()) == lines[1:]


def test_follow_shows_each_durable_record_once_across_seals(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink(tmp_path / "data", env={"ARCHIVER_SEGMENTS_MAX_RECORDS": "4"})

    def send(first: int, count: int) -> None:
        body = b"".join(orjson.dumps({"message": f"m{n}", "name": "app.follow"}) + b"\n" for n in range(first, first + count))
        assert sink.post("/app", body, headers={"Content-Type": "application/x-ndjson"}).status_code == 200

    send(0, 6)  # one segment sealed, one open
    follower = subprocess.Popen([sys.executable, "-m", "archiver", "cat", "--follow", "--json", "--data-dir",
                                 str(sink.data_dir), "--stream", "app"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=_ctrl_c_as_from_a_terminal)
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True).start()  # type: ignore[union-attr]
    seen: list[str] = []

    def have(count: int) -> bool:
        while not lines.empty():
            seen.append(orjson.loads(lines.get())["message"])
        return len(seen) >= count

    try:
        wait_until(lambda: have(6), "the records sent before following", timeout=60)
        marks = requests.get(sink.url + "/_durable", timeout=10).json()["open"]
        assert [(m["stream"], m["durable"]) for m in marks] == [
            ("app", sink.data_dir.joinpath("spool", "open", "app", m["segment"] + ".jsonl").stat().st_size) for m in marks]
        for first in range(6, 15, 3):
            send(first, 3)  # seals a segment the follower has read open
            wait_until(lambda: have(first + 3), "the records sent while following", timeout=60)
        assert seen == [f"m{n}" for n in range(15)]
        assert len(list((sink.data_dir / "spool" / "sealed" / "app").glob("*.jsonl.*"))) >= 3
    finally:
        follower.send_signal(signal.SIGINT)
        try:
            code = follower.wait(30)
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait(10)
        errors = follower.stderr.read()  # type: ignore[union-attr]
        follower.stdout.close()  # type: ignore[union-attr]
        follower.stderr.close()  # type: ignore[union-attr]
    assert code == 0, errors
