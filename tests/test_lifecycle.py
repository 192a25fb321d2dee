"""The sink process: graceful stop seals, one sink per data dir, fast restart, rotation wiring."""

from __future__ import annotations

import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
import requests

from conftest import Sink, archiver_cli, cat_json


def test_sigterm_seals_everything_and_cleans_up(start_sink) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink()
    for n in range(5):
        assert sink.post(f"/s{n % 2}", f"msg=r{n}").status_code == 200
    assert list((sink.data_dir / "spool" / "open").glob("*/*.jsonl"))
    assert sink.stop() == 0
    assert not list((sink.data_dir / "spool" / "open").glob("*/*.jsonl"))
    assert not (sink.data_dir / "sink.pid").exists() and not (sink.data_dir / "sink.json").exists()
    listing = orjson.loads(archiver_cli("ls", "--json", "--data-dir", str(sink.data_dir)).stdout)
    assert sorted(row["stream"] for row in listing) == ["s0", "s1"]
    assert sum(row["records"] for row in listing) == 5 and {row["state"] for row in listing} == {"sealed"}
    assert stat.S_IMODE(sink.data_dir.stat().st_mode) == 0o700
    table = archiver_cli("ls", "--data-dir", str(sink.data_dir)).stdout.decode()
    assert all(row["id"] in table for row in listing)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_request_in_flight_at_the_stop_signal_is_answered_and_kept(start_sink, signum: int) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink()
    body = b"name=late&msg=in+flight"
    url = urlsplit(sink.url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as conn:
        conn.sendall(b"POST /app HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:9])
        assert requests.get(f"{sink.url}/_health", timeout=10).status_code == 200  # the sink has read the head
        assert sink.proc is not None
        sink.proc.send_signal(signum)
        conn.sendall(body[9:])
        assert conn.recv(4096).startswith(b"HTTP/1.1 200 ")
    assert sink.proc.wait(30) == 0
    assert [r["message"] for r in cat_json(sink.data_dir)] == ["in flight"]
    assert not list((sink.data_dir / "spool" / "open").glob("*/*.jsonl"))


def test_keep_alive_connections_close_after_the_stop_signal(start_sink) -> None:  # type: ignore[no-untyped-def]
    """A keep-alive client must not go on starting requests while the sink drains: once the
    stop signal is in, each answer closes its connection."""
    sink = start_sink()
    url = urlsplit(sink.url)
    request = b"POST /app HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    with socket.create_connection((url.hostname, url.port), timeout=30) as kept, \
            socket.create_connection((url.hostname, url.port), timeout=30) as busy:
        kept.sendall(request % 7 + b"msg=one")
        assert kept.recv(4096).startswith(b"HTTP/1.1 200 ")
        body = b"msg=in+flight"
        busy.sendall(request % len(body) + body[:4])
        assert requests.get(f"{sink.url}/_health", timeout=10).status_code == 200  # the sink has read the head
        assert sink.proc is not None
        sink.proc.send_signal(signal.SIGTERM)
        wait_until_refused(url.hostname, url.port)  # the listener is closed: the sink is draining
        kept.sendall(request % 7 + b"msg=two")
        answer = b""
        while chunk := kept.recv(4096):  # to EOF: the sink closes the connection after answering
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in answer
        busy.sendall(body[4:])
        assert busy.recv(4096).startswith(b"HTTP/1.1 200 ")
    assert sink.proc.wait(30) == 0
    assert sorted(r["message"] for r in cat_json(sink.data_dir)) == ["in flight", "one", "two"]


def wait_until_refused(host: str | None, port: int | None) -> None:
    for _ in range(600):
        try:
            socket.create_connection((host, port), timeout=5).close()
        except ConnectionRefusedError:
            return
        time.sleep(0.05)
    raise AssertionError(f"{host}:{port} still accepts connections")


def test_second_sink_on_same_data_dir_is_refused(start_sink) -> None:  # type: ignore[no-untyped-def]
    first = start_sink()
    second = subprocess.run(
        [sys.executable, "-m", "archiver", "serve", "--data-dir", str(first.data_dir), "--port", "0"],
        capture_output=True, timeout=60,
    )
    assert second.returncode == 1
    assert f"another archiver (pid {first.proc.pid}, or one of its workers) is serving data dir" in second.stderr.decode()
    assert first.post("/app", "msg=still+up").status_code == 200


def test_restart_binds_the_same_port_at_once(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = start_sink()
    port = first.url.rsplit(":", 1)[1]
    assert first.post("/app", "msg=before").status_code == 200  # leaves a connection in TIME_WAIT
    assert first.stop() == 0
    again = start_sink(first.data_dir, "--port", port)
    assert again.url.endswith(f":{port}")
    assert again.post("/app", "msg=after").status_code == 200
    assert again.stop() == 0
    assert sorted(r["message"] for r in cat_json(first.data_dir)) == ["after", "before"]


def test_rotation_limits_come_from_config(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "archiver.toml"
    config.write_text('[segments]\nmax_records = 3\ncompression = "zstd"\n')
    sink = start_sink(None, "-c", str(config))
    for n in range(10):
        assert sink.post("/app", f"msg=r{n}").status_code == 200
    assert sink.stop() == 0
    listing = orjson.loads(archiver_cli("ls", "--json", "--data-dir", str(sink.data_dir)).stdout)
    assert [row["records"] for row in sorted(listing, key=lambda r: r["id"])] == [3, 3, 3, 1]
    assert all(row["local_path"].endswith(".jsonl.zst") for row in listing)


def test_cat_reads_open_segments_on_request_and_classic_form(start_sink) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink()
    body = "name=app.db&levelname=ERROR&msg=disk+%25s&args=%28%27full%27%2C%29&created=1795467684.5"
    assert sink.post("/app", body).status_code == 200
    assert cat_json(sink.data_dir) == []
    [record] = cat_json(sink.data_dir, "--include-open")
    assert record["message"] == "disk full"
    classic = archiver_cli("cat", "--include-open", "--data-dir", str(sink.data_dir)).stdout.decode()
    assert classic == f"2026-11-23 21:01:24 {'app.db':>40} ERROR disk full\n"


def test_cat_filters_by_time_and_stream(tmp_path: Path, start_sink) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink()
    for ts, stream in [(1795467600, "a"), (1795467700, "a"), (1795467800, "b")]:
        assert sink.post(f"/{stream}", f"msg=at{ts}&created={ts}").status_code == 200
    assert sink.stop() == 0
    since, until = "2026-11-23T21:01:40Z", "2026-11-23T21:03:20Z"  # [1795467700, 1795467800)
    assert [r["message"] for r in cat_json(sink.data_dir, "--since", since, "--until", until)] == ["at1795467700"]
    assert [r["message"] for r in cat_json(sink.data_dir, "--stream", "b")] == ["at1795467800"]
    bad = archiver_cli("cat", "--data-dir", str(sink.data_dir), "--since", "yesterday-ish", check=False)
    assert bad.returncode == 2 and b"relative age" in bad.stderr


def test_cat_into_a_closed_pipe_exits_quietly(start_sink) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink()
    body = "\n".join(f'{{"message": "m{n}", "pad": "{"x" * 200}"}}' for n in range(20000))
    assert sink.post("/app", body.encode()).json()["accepted"] == 20000
    assert sink.stop() == 0
    pipeline = subprocess.run(
        f"{sys.executable} -m archiver cat --json --data-dir {sink.data_dir} | head -1",
        shell=True, capture_output=True, timeout=120,
    )
    assert pipeline.stdout.count(b"\n") == 1 and pipeline.stderr == b""


def test_config_errors_are_usage_errors(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[spool]\nfsync = "sometimes"\n')
    result = archiver_cli("serve", "-c", str(config), check=False)
    assert result.returncode == 2 and b"spool.fsync must be one of" in result.stderr
    result = archiver_cli("ls", "--data-dir", str(tmp_path / "nothing"), check=False)
    assert result.returncode == 1 and b"not an archiver data dir" in result.stderr


def test_sink_id_is_kept_for_the_data_dir(tmp_path: Path) -> None:
    first = Sink(tmp_path / "data").start()
    sink_id = orjson.loads((first.data_dir / "sink.json").read_bytes())["sink_id"]
    assert first.stop() == 0
    with pytest.raises(RuntimeError, match=f"belongs to sink '{sink_id}'"):
        Sink(tmp_path / "data", env={"ARCHIVER_SINK_ID": "other"}).start()


def test_log_format_json_writes_one_object_a_line(start_sink) -> None:  # type: ignore[no-untyped-def]
    """For log shippers: every line the sink writes is a JSON object; the default stays text."""
    sink = start_sink(None, env={"ARCHIVER_LOG_FORMAT": "json"})
    assert sink.post("/app", "msg=hello").status_code == 200
    assert sink.stop() == 0
    lines = [orjson.loads(line) for line in sink.log_text().splitlines() if line.strip()]
    assert lines and all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    assert any("listening on" in line["message"] for line in lines)
    assert any(line["message"] == "stopped" for line in lines)
