"""`archiver serve --workers 2`: real processes sharing the ports. Records from many connections
land in the archive whichever worker took them, the primary alone writes the manifest and
uploads, /_status and /_metrics report the whole sink on any worker, a clean stop stops every
worker, and acknowledged records survive a SIGKILL of the group or of one worker."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import orjson
import psutil
import requests
from hypothesis import given
from hypothesis import strategies as st

from conftest import Sink, read_json, send_tcp, wait_until
from archiver.app.group import spool_shares
from archiver.format.manifest import Manifest

# Few records a segment, so every worker seals (and sends manifest rows) while it serves.
ENV = {"ARCHIVER_SEGMENTS_MAX_RECORDS": "25", "ARCHIVER_UPLOADER_INTERVAL": "1h"}
HTTP_CLIENTS = 4
HTTP_RECORDS = 60
TCP_CLIENTS = 2
TCP_CONNECTIONS = 8
TCP_LINES = 10


def _start(start_sink, tmp_path: Path, *args: str) -> Sink:  # type: ignore[no-untyped-def]
    return start_sink(tmp_path / "data", "--workers", "2", "--tcp-port", "0",
                      "--store", f"osfs://{tmp_path / 'store'}", *args, env=ENV)


def _info(sink: Sink) -> dict:
    return orjson.loads((sink.data_dir / "sink.json").read_bytes())


def _status(sink: Sink) -> dict:
    return requests.get(sink.url + "/_status", headers={"Connection": "close"}, timeout=30).json()


def _post_each(sink: Sink, client: int, acked: list[str]) -> None:
    """HTTPHandler's way: a new connection per record, so the kernel spreads them."""
    for n in range(HTTP_RECORDS):
        message = f"http-{client}-{n}"
        response = requests.post(sink.url + "/app", data={"msg": message}, headers={"Connection": "close"}, timeout=30)
        assert response.status_code == 200, response.text
        acked.append(message)


def _send_tcp(sink: Sink, client: int, sent: list[str]) -> None:
    host, port = _info(sink)["tcp"].removeprefix("tcp://").rsplit(":", 1)
    for connection in range(TCP_CONNECTIONS):
        messages = [f"tcp-{client}-{connection}-{n}" for n in range(TCP_LINES)]
        send_tcp(host, int(port), b"".join(orjson.dumps({"message": m}) + b"\n" for m in messages))
        sent.extend(messages)


def _load(sink: Sink) -> set[str]:
    """Every client at once; the messages acknowledged (HTTP) or sent and closed cleanly (TCP)."""
    done: list[list[str]] = [[] for _ in range(HTTP_CLIENTS + TCP_CLIENTS)]
    threads = [threading.Thread(target=_post_each, args=(sink, c, done[c])) for c in range(HTTP_CLIENTS)]
    threads += [threading.Thread(target=_send_tcp, args=(sink, c, done[HTTP_CLIENTS + c])) for c in range(TCP_CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    messages = {m for sent in done for m in sent}
    assert len(messages) == HTTP_CLIENTS * HTTP_RECORDS + TCP_CLIENTS * TCP_CONNECTIONS * TCP_LINES
    return messages


def _archived(data_dir: Path) -> list[str]:
    return [record["message"] for record in read_json(data_dir) if record["stream"] in ("app", "tcp")]


def _spool_files(data_dir: Path) -> list[Path]:
    return [path for path in (data_dir / "spool").glob("*open/*/*.jsonl")] + \
        [path for path in (data_dir / "spool").glob("w*/open/*/*.jsonl")]


def _records_received(sink: Sink) -> float:
    text = requests.get(sink.url + "/_metrics", headers={"Connection": "close"}, timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("archiver_records_received_total{"))


def _pids(sink: Sink) -> list[int]:
    assert sink.proc is not None
    return [sink.proc.pid, *_info(sink)["worker_pids"]]


def _group(sink: Sink) -> list[psutil.Process]:
    """The primary and every process under it: workers and their decode workers."""
    assert sink.proc is not None
    primary = psutil.Process(sink.proc.pid)
    return [primary, *primary.children(recursive=True)]


def _log(sink: Sink) -> str:
    """The whole log of the sink's processes (Sink.log_text keeps only its end)."""
    return (sink.data_dir.parent / f"{sink.data_dir.name}.log").read_text(errors="replace")


def _alive(processes: list[psutil.Process]) -> bool:
    """Any of them still running (a zombie, waiting for its parent to reap it, is not)."""
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            pass
    return False


def test_two_workers_archive_every_record_once_and_stop_together(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sink = _start(start_sink, tmp_path)
    pids = _pids(sink)
    assert len(pids) == 2 and psutil.Process(pids[1]).ppid() == pids[0]  # the primary started worker 1
    messages = _load(sink)

    wait_until(lambda: sum(_status(sink)["records"].values()) == len(messages), "every record counted")
    workers = _status(sink)["workers"]
    assert sorted(worker["pid"] for worker in workers) == sorted(pids)
    assert all(worker["records"] > 0 for worker in workers), workers  # both took some
    assert sum(worker["records"] for worker in workers) == len(messages)
    # Each scrape on a new connection lands on either worker; every one reports the whole sink.
    assert {_records_received(sink) for _ in range(20)} == {len(messages)}

    flushed = requests.post(sink.url + "/_admin/flush", timeout=300).json()
    assert flushed["seal_failed"] == [] and flushed["failed"] == 0
    with closing(Manifest(sink.data_dir, read_only=True)) as manifest:
        rows = list(manifest.segments())
    assert {row.state for row in rows} <= {"uploaded", "verified"}
    sealed_by = {int(row.id.rsplit("-", 1)[1]) % 16 for row in rows}
    assert sealed_by == {0, 1}  # both workers sealed segments, entered in the manifest by the primary
    store_files = [path for path in (tmp_path / "store").rglob("*.jsonl.gz")]
    assert sorted(path.name for path in store_files) == sorted(Path(row.local_path).name for row in rows)

    group = _group(sink)
    assert sink.stop() == 0, sink.log_text()
    wait_until(lambda: not _alive(group), "every process of the sink to exit")
    assert _spool_files(sink.data_dir) == []
    log = _log(sink)
    uploads = [line.split(" uploaded ", 1)[1].split(" ", 1)[0] for line in log.splitlines() if " uploaded /" in line]
    assert sorted(uploads) == sorted(row.store_path for row in rows)  # one upload stream: each segment once
    archived = _archived(sink.data_dir)
    assert len(archived) == len(messages) and set(archived) == messages


def test_a_sigkill_of_the_group_loses_nothing_acknowledged(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sink = _start(start_sink, tmp_path)
    messages = _load(sink)
    worker_open = sink.data_dir / "spool" / "w1" / "open"

    def worker_holds_an_open_segment() -> bool:
        if list(worker_open.glob("*/*.jsonl")):
            return True
        _post_each(sink, 1000 + len(extra), extra)  # on new connections: some reach worker 1
        return False

    extra: list[str] = []
    wait_until(worker_holds_an_open_segment, "an open segment in worker 1's spool")
    messages |= set(extra)
    group = _group(sink)
    for process in reversed(group):  # workers first: a worker stops (and seals) at its primary's end
        process.kill()
    sink.kill()
    wait_until(lambda: not _alive(group), "the group to die")

    # One worker now: the primary alone recovers every worker's open spool.
    again = start_sink(sink.data_dir, "--store", f"osfs://{tmp_path / 'store'}", env=ENV)
    assert again.stop() == 0, again.log_text()
    assert _spool_files(sink.data_dir) == []
    archived = _archived(sink.data_dir)
    assert len(archived) == len(messages) and set(archived) == messages


def test_a_worker_killed_stops_the_sink_loudly(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sink = _start(start_sink, tmp_path)
    messages = _load(sink)
    worker = _info(sink)["worker_pids"][0]
    os.kill(worker, signal.SIGKILL)
    assert sink.proc is not None
    assert sink.proc.wait(60) == 1
    assert f"worker 1 (pid {worker}) exited with signal 9 while serving" in _log(sink)

    again = _start(start_sink, tmp_path)
    assert again.stop() == 0, again.log_text()
    archived = _archived(sink.data_dir)
    assert len(archived) == len(messages) and set(archived) == messages


def test_a_seal_that_fails_at_stop_in_any_worker_fails_the_exit(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink(tmp_path / "data", "--workers", "2", env={"ARCHIVER_FAILPOINTS": "seal=fail"})
    acked: list[str] = []

    def both_hold_an_open_segment() -> bool:
        spool = sink.data_dir / "spool"
        if list((spool / "open").glob("*/*.jsonl")) and list((spool / "w1" / "open").glob("*/*.jsonl")):
            return True
        _post_each(sink, len(acked), acked)
        return False

    wait_until(both_hold_an_open_segment, "an open segment in each worker's spool")
    assert sink.proc is not None
    worker = _info(sink)["worker_pids"][0]
    sink.proc.send_signal(signal.SIGTERM)
    assert sink.proc.wait(60) == 1
    log = _log(sink)
    assert "could not be sealed at stop" in log  # the primary's own
    assert f"worker 1 (pid {worker}) exited with status 1 at stop" in log

    # The records were durable all along: the next start seals them.
    again = start_sink(sink.data_dir)
    assert again.stop() == 0, again.log_text()
    assert _spool_files(sink.data_dir) == []
    archived = _archived(sink.data_dir)
    assert len(archived) == len(acked) and set(archived) == set(acked)


def test_a_restart_waits_for_the_workers_of_a_killed_primary(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A worker of a primary that died still answers the requests it had begun: until it exits
    it holds the data-dir lock, so a new sink cannot recover (and delete) the spool it writes."""
    sink = _start(start_sink, tmp_path)
    acked: list[str] = []
    worker_open = sink.data_dir / "spool" / "w1" / "open"

    def worker_holds_an_open_segment() -> bool:
        if list(worker_open.glob("*/*.jsonl")):
            return True
        _post_each(sink, len(acked), acked)
        return False

    wait_until(worker_holds_an_open_segment, "an open segment in worker 1's spool")
    host, port = sink.url.removeprefix("http://").rsplit(":", 1)
    begun = []  # requests whose bodies are half sent, some of them to worker 1
    for n in range(8):
        sock = socket.create_connection((host, int(port)), timeout=60)
        body = f"msg=slow-{n}".encode()
        sock.sendall(b"POST /app HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body[:3]))
        begun.append((sock, body, f"slow-{n}"))
    worker = psutil.Process(_info(sink)["worker_pids"][0])
    sink.kill()

    refused = subprocess.run([sys.executable, "-m", "archiver", "serve", "--data-dir", str(sink.data_dir), "--port", "0"],
                             capture_output=True, timeout=60)
    assert worker.is_running() and refused.returncode == 1
    assert b"or one of its workers) is serving data dir" in refused.stderr
    for sock, body, message in begun:
        with closing(sock):
            try:
                sock.sendall(body[3:])
                answer = sock.recv(4096)
            except OSError:  # a connection the killed primary had accepted
                answer = b""
            if answer.startswith(b"HTTP/1.1 200"):
                acked.append(message)
    worker.wait(120)  # it has seen its primary go and stops, sealing what it can

    again = start_sink(sink.data_dir, "--store", f"osfs://{tmp_path / 'store'}", env=ENV)
    assert again.stop() == 0, again.log_text()
    assert _spool_files(sink.data_dir) == []
    archived = _archived(sink.data_dir)
    assert any(message.startswith("slow-") for message in acked)
    assert set(acked) <= set(archived) and len(archived) == len(set(archived))


@given(max_bytes=st.integers(0, 2**40), workers=st.integers(2, 16), backlogs=st.lists(st.integers(0, 2**41), min_size=1))
def test_spool_shares_add_up_to_the_limit_and_grow_as_the_backlog_drains(max_bytes: int, workers: int,
                                                                          backlogs: list[int]) -> None:
    previous = -1
    for backlog in sorted(backlogs, reverse=True):  # a backlog only drains
        primary, share = spool_shares(max_bytes, workers, backlog)
        assert primary + (workers - 1) * share == max_bytes and 0 <= share <= primary
        assert share >= previous
        previous = share
    assert spool_shares(max_bytes, workers, 0)[1] == max_bytes // workers


def test_a_backlog_left_by_an_earlier_run_keeps_the_spool_within_its_limit(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The primary counts the backlog; worker 1's limit is an equal share of the room it leaves,
    and grows to an equal share of the whole as the uploader prunes the backlog."""
    limit = 2_000_000
    env = {**ENV, "ARCHIVER_SPOOL_MAX_BYTES": str(limit), "ARCHIVER_UPLOADER_KEEP_LOCAL": "0s",
           "ARCHIVER_UPLOADER_VERIFY_INTERVAL": "1s", "ARCHIVER_UPLOADER_PRUNE_INTERVAL": "1s"}
    store = f"osfs://{tmp_path / 'store'}"
    first = start_sink(tmp_path / "data", "--store", store, env=env)
    while _status(first)["spool_bytes"] < 300_000:  # incompressible, so it stays that large sealed
        batch = [{"message": base64.b64encode(os.urandom(1500)).decode()} for _ in range(50)]
        assert first.post("/app", orjson.dumps(batch), headers={"Content-Type": "application/json"}).status_code == 200
    assert first.stop() == 0, first.log_text()  # sealed, not uploaded: the uploader's interval is an hour

    sink = start_sink(first.data_dir, "--workers", "2", "--store", store, env=env)
    workers = {worker["worker"]: worker for worker in _status(sink)["workers"]}
    backlog = workers[0]["spool_bytes"]
    assert backlog >= 150_000  # compressed at seal
    assert workers[1]["spool_limit"] == (limit - backlog) // 2
    assert workers[0]["spool_limit"] + workers[1]["spool_limit"] == limit

    assert requests.post(sink.url + "/_admin/flush", timeout=300).json()["failed"] == 0  # uploads the backlog
    wait_until(lambda: [w["spool_limit"] for w in _status(sink)["workers"]] == [limit // 2, limit // 2],
               "equal shares once the backlog is verified and pruned")
    assert sink.stop() == 0, sink.log_text()
