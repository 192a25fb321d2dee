"""Grid faults on a 3-node, 2-of-3 grid: a node down, shares lost, every node down."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import orjson
import pytest
import requests

from archiver.app.grid import LocalGrid
from conftest import archiver_cli, cat_json

OUTAGE_MINUTES = 3
DRAIN_LIMIT = 300  # seconds; with the store down, retries wait at most uploader.interval (1 s here)


def sink_config(tmp_path: Path, grid: LocalGrid) -> Path:
    config = tmp_path / "archiver.toml"
    config.write_text(
        f'data_dir = "data"\n[store]\nurl = "tahoe://{grid.gateway_url.split("://")[1]}"\nshares_happy = 3\n'
        '[uploader]\ninterval = "1s"\npublish_delay = "200ms"\nverify_interval = "1h"\nbackoff_base = "500ms"\n'
    )
    return config


def send(url: str, messages: list[str]) -> None:
    for message in messages:
        assert requests.post(f"{url}/app", data=f"msg={message}", timeout=10).status_code == 200


def test_one_node_down_then_lost_shares_repaired(start_sink, grid3: LocalGrid, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = sink_config(tmp_path, grid3)
    sink = start_sink(tmp_path / "data", "-c", str(config))
    send(sink.url, [f"before {n}" for n in range(5)])
    archiver_cli("flush", "-c", str(config))
    read_cap = orjson.loads(archiver_cli("manifest", "export", "-c", str(config)).stdout)["root"]["read_cap"]
    url = f"tahoe://{grid3.gateway_url.split('://')[1]}/{read_cap}"

    grid3.stop_node("storage2")
    try:
        grid3.wait_ready(60, servers=2)
        send(sink.url, [f"during {n}" for n in range(5)])  # ingestion goes on
        refused = archiver_cli("flush", "-c", str(config), check=False)
        assert refused.returncode == 1 and b"failed 1" in refused.stdout
        status = orjson.loads(archiver_cli("status", "--json", "-c", str(config)).stdout)
        assert "2 storage server(s) connected, shares.happy is 3" in status["last_error"]
        assert status["segments"]["sealed"] == 1
        assert sorted(r["message"] for r in cat_json(tmp_path, "--archive", url)) == [f"before {n}" for n in range(5)]
    finally:
        grid3.start_node("storage2")
    grid3.wait_ready(60)
    assert b"failed 0, backlog 0" in archiver_cli("flush", "-c", str(config)).stdout  # retried until happy

    # A storage node loses every share it held: verify flags it, --repair restores happiness.
    # The node is down while its disk is wiped: a running node may be writing a share (a publish).
    grid3.stop_node("storage2")
    shutil.rmtree(grid3.node_dir("storage2") / "storage" / "shares")
    (grid3.node_dir("storage2") / "storage" / "shares").mkdir()
    grid3.start_node("storage2")
    grid3.wait_ready(60)
    damaged = archiver_cli("verify", "--json", "-c", str(config), check=False)
    report = orjson.loads(damaged.stdout.splitlines()[-1])  # the summary line
    assert damaged.returncode == 1 and len(report["problems"]) == 2
    assert all(p["where"] == "store" and "unhealthy" in p["problem"] for p in report["problems"])
    repaired = archiver_cli("verify", "--repair", "--json", "-c", str(config), check=False)
    assert repaired.returncode in (0, 1)
    healthy = archiver_cli("verify", "--json", "-c", str(config), check=False)
    assert healthy.returncode == 0, healthy.stdout
    assert orjson.loads(healthy.stdout.splitlines()[-1])["ok"] is True
    assert sink.stop() == 0


@pytest.mark.soak
@pytest.mark.timeout(OUTAGE_MINUTES * 60 + DRAIN_LIMIT + 900)  # the outage, the drain, and node stops and starts
def test_every_node_down_for_minutes(start_sink, grid3: LocalGrid, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = sink_config(tmp_path, grid3)
    sink = start_sink(tmp_path / "data", "-c", str(config), env={"ARCHIVER_SEGMENTS_MAX_AGE": "5s"})
    for node in grid3.spec.nodes:
        grid3.stop_node(node.name)
    sent = []
    try:
        deadline = time.monotonic() + OUTAGE_MINUTES * 60
        while time.monotonic() < deadline:
            message = f"outage {len(sent)}"
            send(sink.url, [message])  # every request still answered 200
            sent.append(message)
            time.sleep(0.05)
        during = requests.get(f"{sink.url}/_status", timeout=10).json()
        assert during["backlog_bytes"] > 0 and during["segments"]["sealed"] > 1  # the spool grows
        assert during["last_error"]
    finally:
        for node in grid3.spec.nodes:
            grid3.start_node(node.name)
    grid3.wait_ready(120)

    # No flush: the uploader finds the grid back and drains the backlog by itself.
    def drained() -> bool:
        status = requests.get(f"{sink.url}/_status", timeout=10).json()
        return not status["open"] and status["segments"]["sealed"] == 0 and status["backlog_bytes"] == 0

    deadline = time.monotonic() + DRAIN_LIMIT
    while not drained():
        assert time.monotonic() < deadline, f"the backlog did not drain within {DRAIN_LIMIT} s of the grid's return"
        time.sleep(1)
    status = requests.get(f"{sink.url}/_status", timeout=10).json()
    assert status["segments"]["uploaded"] + status["segments"]["verified"] >= during["segments"]["sealed"]
    assert sink.stop() == 0  # publishes the manifest; nothing is left to seal or upload
    read_cap = orjson.loads(archiver_cli("manifest", "export", "-c", str(config)).stdout)["root"]["read_cap"]
    archived = {r["message"] for r in cat_json(tmp_path, "--archive", f"tahoe://{grid3.gateway_url.split('://')[1]}/{read_cap}")}
    assert set(sent) <= archived
