"""Disk pressure: at the spool limit HTTP answers 503 + Retry-After and TCP reading pauses;
nothing acknowledged is lost, and ingestion resumes once uploads and pruning free space."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import orjson
import pytest
import requests

from archiver import open_archive
from archiver.ingest.tcp import SPOOL_FULL_PAUSE
from conftest import Sink, archiver_cli


def _pressed_sink(start_sink, tmp_path: Path, *, spool: str, max_age: str, upload_every: str,  # type: ignore[no-untyped-def]
                  **env: str) -> tuple[Sink, int]:
    """A sink with a small spool, HTTP and TCP, uploading to a local store and pruning at once
    after verifying; and its TCP port."""
    env = {
        "ARCHIVER_SPOOL_MAX_BYTES": spool,
        "ARCHIVER_SEGMENTS_MAX_AGE": max_age,
        "ARCHIVER_STORE_URL": f"osfs://{tmp_path / 'store'}",
        "ARCHIVER_UPLOADER_INTERVAL": upload_every,
        "ARCHIVER_UPLOADER_VERIFY_INTERVAL": "300ms",
        "ARCHIVER_UPLOADER_PRUNE_INTERVAL": "300ms",
        "ARCHIVER_UPLOADER_KEEP_LOCAL": "0s",
        **env,
    }
    sink: Sink = start_sink(tmp_path / "data", "--tcp-port", "0", env=env)
    return sink, int(orjson.loads((sink.data_dir / "sink.json").read_bytes())["tcp"].rsplit(":", 1)[1])


def test_spool_limit_pushes_back_and_recovers(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sink, tcp_port = _pressed_sink(start_sink, tmp_path, spool="150KB", max_age="300ms", upload_every="500ms",
                                   ARCHIVER_SPOOL_RETRY_AFTER="1s")
    tcp_lines = [orjson.dumps({"message": f"tcp {n}", "pad": "p" * 300}) for n in range(3000)]  # ~1 MB

    def tcp_sender() -> None:
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=120) as conn:
            conn.sendall(b"\n".join(tcp_lines) + b"\n")  # blocks while the sink stops reading
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(4096):
                pass

    sender = threading.Thread(target=tcp_sender)
    sender.start()
    acked, refusals, retry_after = [], 0, set()
    n = 0
    deadline = time.monotonic() + 120
    while len(acked) < 400 and time.monotonic() < deadline:
        message = f"http {n} " + "h" * 300
        response = requests.post(f"{sink.url}/app", data=f"msg={message}", timeout=30)
        if response.status_code == 503:
            refusals += 1
            retry_after.add(response.headers["Retry-After"])
            time.sleep(0.2)
            continue
        assert response.status_code == 200
        acked.append(message)
        n += 1
    sender.join(120)
    assert len(acked) == 400 and refusals > 0 and retry_after == {"1"}
    assert not sender.is_alive()
    assert sink.stop() == 0
    assert list((sink.data_dir / "spool" / "open").glob("*/*")) == [], "a clean stop left segments unsealed"
    archive = open_archive(sink.data_dir)
    messages = {r["message"] for r in archive.records()}
    missing = (set(acked) | {f"tcp {n}" for n in range(3000)}) - messages
    assert not missing, (
        f"{len(missing)} acknowledged record(s) missing, such as {sorted(missing)[:3]}; "
        f"segments: {[(row.id, row.state, row.records) for row in archive.segments()]}; sink log:\n{sink.log_text()}"
    )
    assert archive.verify().ok


def test_tcp_reading_pauses_while_the_spool_is_full(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The spool is held at its limit: nothing seals, so nothing is uploaded, until a flush.
    Meanwhile a TCP sender's lines are not read (none reaches the spool, and its half-closed
    connection is not closed); once the flush frees space they are read, made durable, and
    only then is the connection closed."""
    sink, tcp_port = _pressed_sink(start_sink, tmp_path, spool="100KB", max_age="1h", upload_every="1h")
    acked = []
    for n in range(2000):  # about 200 records fill 100 KB
        message = f"http {n} " + "h" * 300
        response = requests.post(f"{sink.url}/app", data=f"msg={message}", timeout=30)
        if response.status_code == 503:
            break
        assert response.status_code == 200
        acked.append(message)
    assert response.status_code == 503 and acked
    assert requests.get(f"{sink.url}/_health", timeout=10).status_code == 503

    tcp_lines = [orjson.dumps({"message": f"tcp {n}"}) for n in range(100)]
    with socket.create_connection(("127.0.0.1", tcp_port), timeout=60) as conn:
        conn.sendall(b"\n".join(tcp_lines) + b"\n")
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(6 * SPOOL_FULL_PAUSE)  # several of the sink's looks at the spool
        with pytest.raises(TimeoutError):  # a sink that read on would archive the lines and close
            conn.recv(1)
        status = requests.get(f"{sink.url}/_status", timeout=10).json()
        assert "tcp" not in status["open"] and status["spool_bytes"] >= status["spool_limit"]

        archiver_cli("flush", "--data-dir", str(sink.data_dir))  # seals and uploads: the spool shrinks
        conn.settimeout(60)
        assert conn.recv(1) == b""  # read, durable, closed
    assert requests.post(f"{sink.url}/app", data="msg=after+the+flush", timeout=30).status_code == 200
    assert sink.stop() == 0
    assert list((sink.data_dir / "spool" / "open").glob("*/*")) == [], "a clean stop left segments unsealed"
    messages = {r["message"] for r in open_archive(sink.data_dir).records()}
    assert set(acked) | {"after the flush"} <= messages
    assert {f"tcp {n}" for n in range(100)} <= messages
