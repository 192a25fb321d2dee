"""Sealed segments reach a real grid, findable from the manifest, through crashes and outages."""

from __future__ import annotations

import hashlib
import logging
import logging.handlers
import os
import subprocess
import time
from pathlib import Path
from typing import Callable

import orjson
import pytest
import requests

from archiver.app.grid import LocalGrid
from archiver.store.tahoe import TahoeFS, TahoeStore
from conftest import Sink, archiver_cli, cat_json, make_uploader, rows, seal

INTERVAL = 3.0
OUTAGE = float(os.environ.get("TEST_OUTAGE_SECONDS", "30"))
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # stdlib HTTPHandler


def sink_env(grid: LocalGrid, **extra: str) -> dict[str, str]:
    return {
        "ARCHIVER_STORE_URL": "tahoe://" + grid.gateway_url.split("://")[1],
        "ARCHIVER_UPLOADER_INTERVAL": f"{INTERVAL}s",
        "ARCHIVER_UPLOADER_VERIFY_INTERVAL": "1s",
        "ARCHIVER_UPLOADER_PUBLISH_DELAY": "200ms",
        "ARCHIVER_UPLOADER_BACKOFF_BASE": "1s",
        **extra,
    }


def export(data_dir: Path, *args: str) -> dict:
    return orjson.loads(archiver_cli("manifest", "export", "--data-dir", str(data_dir), *args).stdout)


def status(data_dir: Path) -> dict:
    return orjson.loads(archiver_cli("status", "--json", "--data-dir", str(data_dir)).stdout)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


def log_through_httphandler(sink: Sink, stream: str, messages: list[str]) -> None:
    logger = logging.getLogger(f"e2e.{stream}.{time.monotonic_ns()}")
    logger.propagate = False
    handler = logging.handlers.HTTPHandler(sink.url.split("://")[1], f"/{stream}", method="POST")
    logger.addHandler(handler)
    for message in messages:
        logger.warning("%s", message)
    logger.removeHandler(handler)


def read_url(grid: LocalGrid, read_cap: str) -> str:
    return f"tahoe://{grid.gateway_url.split('://')[1]}/{read_cap}"


def test_records_reach_the_grid_and_get_verified(start_sink, grid1: LocalGrid, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink(tmp_path / "data", env=sink_env(grid1))
    messages = [f"e2e record {n}" for n in range(5)]
    log_through_httphandler(sink, "app", messages)
    flushed = archiver_cli("flush", "--data-dir", str(sink.data_dir)).stdout.decode()
    assert "failed 0, backlog 0" in flushed
    document = export(sink.data_dir)
    [segment] = document["segments"]
    day, hour = segment["id"][:8], segment["id"][9:11]
    assert segment["store_path"] == f"/app/{day[:4]}/{day[4:6]}/{day[6:]}/{hour}/{segment['id']}.jsonl.gz"
    assert segment["state"] in ("uploaded", "verified") and segment["read_cap"].startswith("URI:CHK:")
    assert f"root read cap: {document['root']['read_cap']}" in sink.log_text()  # what an operator greps the log for
    reader = TahoeFS(grid1.gateway_url, document["root"]["read_cap"])
    assert hashlib.sha256(reader.readbytes(segment["store_path"])).hexdigest() == segment["sha256"]
    wait_until(lambda: status(sink.data_dir)["segments"]["verified"] == 1, 30, "verification")
    assert export(sink.data_dir)["segments"][0]["verified_at"]
    assert sorted(r["message"] for r in cat_json(sink.data_dir, "--archive", read_url(grid1, document["root"]["read_cap"]))) == messages

    write_cap = export(sink.data_dir, "--include-write-caps")["root"]["write_cap"]
    assert write_cap.startswith("URI:DIR2:")
    assert sink.stop() == 0
    secret = write_cap.split(":")[2]
    published = b"".join(reader.readbytes(path) for path in reader.walk.files("/_manifest"))
    outputs = [sink.log_text(), str(document), published.decode(errors="replace"), archiver_cli("ls", "--data-dir", str(sink.data_dir)).stdout.decode()]
    assert not any(secret in text for text in outputs)


def test_grid_outage_keeps_ingesting_and_drains_after(start_sink, grid1: LocalGrid, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink(tmp_path / "data", env=sink_env(grid1, ARCHIVER_SEGMENTS_MAX_AGE="1s"))
    log_through_httphandler(sink, "app", ["before the outage"])
    archiver_cli("flush", "--data-dir", str(sink.data_dir))
    read_cap = export(sink.data_dir)["root"]["read_cap"]
    sent: list[str] = []
    answers: list[int] = []
    grid1.stop_node(grid1.gateway_node)
    try:
        deadline = time.monotonic() + OUTAGE
        n = 0
        while time.monotonic() < deadline:
            message = f"during outage {n}"
            answers.append(requests.post(f"{sink.url}/app", data=f"msg={message}", timeout=10).status_code)
            sent.append(message)
            n += 1
            time.sleep(0.05)
        wait_until(lambda: status(sink.data_dir)["segments"]["sealed"] > 1, 10, "sealing during the outage")
        assert status(sink.data_dir)["last_error"]
    finally:
        grid1.start_node(grid1.gateway_node)
    assert set(answers) == {200} and len(sent) > 50
    # No flush: the uploader drains by itself. A generous deadline, since a loaded machine is slow.
    wait_until(lambda: status(sink.data_dir)["backlog_bytes"] == 0, 120, "draining the backlog")
    archiver_cli("flush", "--data-dir", str(sink.data_dir))
    archived = {r["message"] for r in cat_json(sink.data_dir, "--archive", read_url(grid1, read_cap))}
    assert set(sent) | {"before the outage"} <= archived


def test_sigkill_between_put_and_manifest_write(start_sink, grid1: LocalGrid, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "data"
    doomed = start_sink(data_dir, env=sink_env(grid1, ARCHIVER_FAILPOINTS="after-upload-put"))
    messages = [f"crash {n}" for n in range(10)]
    log_through_httphandler(doomed, "app", messages)
    archiver_cli("flush", "--data-dir", str(data_dir), check=False)
    assert doomed.proc.wait(60) == -9  # killed right after the PUT, before the manifest update
    assert {s["state"] for s in export(data_dir)["segments"]} == {"sealed"}
    sink = start_sink(data_dir, env=sink_env(grid1))
    archiver_cli("flush", "--data-dir", str(data_dir))
    document = export(data_dir)
    [segment] = document["segments"]
    assert segment["state"] in ("uploaded", "verified")
    reader = TahoeFS(grid1.gateway_url, document["root"]["read_cap"])
    folder = segment["store_path"].rsplit("/", 1)[0]
    assert reader.listdir(folder) == [segment["id"] + ".jsonl.gz"]
    published = orjson.loads(reader.readbytes(f"/_manifest/{document['sink_id']}/current.json"))
    assert [s["id"] for s in published["segments"]] == [segment["id"]]
    assert sorted(r["message"] for r in cat_json(data_dir, "--archive", read_url(grid1, document["root"]["read_cap"]))) == messages
    assert sink.stop() == 0


def test_read_cap_alone_lists_and_rebuilds_and_two_sinks_share_a_root(start_sink, grid1: LocalGrid, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = start_sink(tmp_path / "a", env=sink_env(grid1, ARCHIVER_SEGMENTS_MAX_RECORDS="3"))
    log_through_httphandler(first, "app", [f"a{n}" for n in range(7)])
    log_through_httphandler(first, "jobs", ["j0"])
    archiver_cli("flush", "--data-dir", str(first.data_dir))
    original = export(first.data_dir)
    write_cap = export(first.data_dir, "--include-write-caps")["root"]["write_cap"]
    gateway = grid1.gateway_url.split("://")[1]
    second = start_sink(tmp_path / "b", env=sink_env(grid1, ARCHIVER_STORE_URL=f"tahoe://{gateway}/{write_cap}", ARCHIVER_SINK_ID="sinkb"))
    log_through_httphandler(second, "app", ["b0", "b1"])
    archiver_cli("flush", "--data-dir", str(second.data_dir))
    assert first.stop() == 0 and second.stop() == 0

    url = read_url(grid1, original["root"]["read_cap"])
    listing = orjson.loads(archiver_cli("ls", "--json", "--archive", url).stdout)
    sinks = {row["id"].split("-", 1)[1].rsplit("-", 1)[0] for row in listing}
    assert sinks == {original["sink_id"], "sinkb"}
    assert {row["id"] for row in listing} >= {s["id"] for s in original["segments"]}
    assert len(listing) == len(original["segments"]) + 1

    compared = ("id", "stream", "store_path", "read_cap", "sha256", "records", "first_ts", "last_ts", "levels", "raw_bytes", "stored_bytes")

    def key(document: dict) -> tuple[list[tuple], dict[str, str]]:
        segments = sorted(tuple(orjson.dumps(s[f]) for f in compared) for s in document["segments"])
        return segments, {path: caps["read_cap"] for path, caps in document["dirs"].items() if not path.startswith("/_manifest")}

    rebuilt = tmp_path / "rebuilt"
    ambiguous = archiver_cli("manifest", "rebuild", "--data-dir", str(rebuilt), "--archive", url, check=False)
    assert ambiguous.returncode == 1 and b"--sink-id" in ambiguous.stderr
    archiver_cli("manifest", "rebuild", "--data-dir", str(rebuilt), "--archive", url, "--sink-id", original["sink_id"])
    assert key(export(rebuilt)) == key(original)

    TahoeFS(grid1.gateway_url, write_cap).removetree("/_manifest")  # no published manifests: walk the tree
    walked = tmp_path / "walked"
    archiver_cli("manifest", "rebuild", "--data-dir", str(walked), "--archive", url, "--sink-id", original["sink_id"])
    assert key(export(walked)) == key(original)
    # Serving from it with no cap in the URL would start a second, unrelated root: refused.
    refused = archiver_cli("serve", "--data-dir", str(walked), "--port", "0", "--store", f"tahoe://{gateway}", check=False)
    assert refused.returncode == 1 and b"write cap" in refused.stderr and write_cap.encode() not in refused.stderr


def test_reading_from_a_read_cap_and_verifying_against_the_grid(start_sink, grid1: LocalGrid, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink(tmp_path / "data", env=sink_env(grid1, ARCHIVER_SEGMENTS_MAX_RECORDS="2"))
    log_through_httphandler(sink, "app", ["one", "two", "three failed", "four"])
    archiver_cli("flush", "--data-dir", str(sink.data_dir))
    wait_until(lambda: status(sink.data_dir)["segments"]["verified"] == 2, 30, "verification")
    assert sink.stop() == 0
    document = export(sink.data_dir)
    url = read_url(grid1, document["root"]["read_cap"])

    from archiver import open_archive

    with open_archive(url) as archive:  # another machine: nothing but the read cap
        assert [r["message"] for r in archive.records(contains="failed", level="WARNING")] == ["three failed"]
        restored = archive.restore(tmp_path / "restored")
        assert len(restored) == 2 and archive.verify().ok
    out = archiver_cli("cat", "--archive", url, "--grep", "four").stdout.decode()
    assert out.endswith("WARNING four\n")

    write_cap = export(sink.data_dir, "--include-write-caps")["root"]["write_cap"]
    missing = document["segments"][0]
    TahoeFS(grid1.gateway_url, write_cap).remove(missing["store_path"])
    report = orjson.loads(archiver_cli("verify", "--json", "--data-dir", str(sink.data_dir), check=False).stdout.splitlines()[-1])
    assert not report["ok"] and [(p["segment"], p["where"]) for p in report["problems"]] == [(missing["id"], "store")]


def test_embedded_grid_as_make_run_uses_it(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    years = {time.strftime("%Y", time.gmtime())}
    sink = start_sink(tmp_path / "data", "--store", "embedded", env={"ARCHIVER_UPLOADER_INTERVAL": "1s"})
    log_through_httphandler(sink, "app", ["embedded one", "embedded two"])
    archiver_cli("flush", "--data-dir", str(sink.data_dir))
    state = status(sink.data_dir)
    assert state["store"]["servers_connected"] == 1 and state["store"]["root_read_cap"].startswith("URI:DIR2-RO:")
    assert state["segments"]["uploaded"] + state["segments"]["verified"] == 1
    grid = LocalGrid(sink.data_dir / "grid")
    node = str(grid.node_dir(grid.gateway_node))
    listing = subprocess.run([grid.tahoe, "-d", node, "ls", "archive:app"], capture_output=True, text=True, timeout=60)
    years.add(time.strftime("%Y", time.gmtime()))  # a run across New Year's midnight sees either year
    assert len(listing.stdout.split()) == 1 and listing.stdout.split()[0] in years  # the alias make run promises
    assert "root read cap:  URI:DIR2-RO:" in sink.log_text() and "curl -X POST" in sink.log_text()
    assert sink.stop() == 0
    assert not any(node["pid"] for node in grid.status()["nodes"])  # stopped with the sink


def test_a_day_directory_removed_from_the_grid_is_made_again(grid1: LocalGrid, tmp_path: Path) -> None:
    """Uploads go into the day's directory by its cap; one removed from the tree meanwhile is
    found when verifying, and its segments are uploaded again into a new one."""
    seal(tmp_path / "data", {"app": 2})
    store = grid1.create_root()
    uploader = make_uploader(tmp_path, TahoeStore(store))
    assert uploader.upload_due()["uploaded"] == 1
    store.removetree("/app")  # someone deleted the stream's tree
    seal(tmp_path / "data", {"app": 1})
    assert uploader.upload_due()["uploaded"] == 1  # into the removed directory, by its cap
    assert uploader.verify_due() == {"verified": 0, "unhealthy": 0, "missing": 2}
    assert {row.state for row in rows(tmp_path)} == {"sealed"}
    assert uploader.upload_due()["uploaded"] == 2
    assert uploader.verify_due() == {"verified": 2, "unhealthy": 0, "missing": 0}
    for row in rows(tmp_path):
        assert store.getinfo(row.store_path, namespaces=["tahoe"]).raw["tahoe"]["read_cap"] == row.read_cap
    assert set(uploader.opened.listdir(row.store_path.rsplit("/", 1)[0])) == {f"{r.id}.jsonl.gz" for r in rows(tmp_path)}
