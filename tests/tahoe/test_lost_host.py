"""The lost-host drill of docs/operations.md on a real grid: host A's sink archives and
publishes, an auditor pins the published chain's head, host A is lost (SIGKILL, data dir
deleted), and host B rebuilds the manifest from the root write cap the operator kept and
carries on as the same sink, into the same root and the same chain.

A published period closes at the first publish after its hour ends (or at 100 segments); the
test moves the open period's start an hour back instead of waiting an hour, so each host
closes one chain file with a few segments."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import requests

from archiver.app.grid import LocalGrid
from archiver.format.published import CURRENT
from archiver.format.store_layout import published_dir
from archiver.store import NotFound, Store, open_store
from conftest import Sink, age_open_period, archiver_cli, low_port, wait_until

SINK_ID = "hosta"
PUBLISH = {"ARCHIVER_UPLOADER_PUBLISH_DELAY": "200ms"}


def one_segment_each(sink: Sink, messages: list[str]) -> None:
    """Each message acknowledged, then sealed and uploaded on its own (POST /_admin/flush)."""
    with requests.Session() as session:
        for message in messages:
            session.post(f"{sink.url}/app", json={"message": message}, timeout=30).raise_for_status()
            session.post(f"{sink.url}/_admin/flush", timeout=120).raise_for_status()


def close_a_period(sink: Sink, store: Store, message: str) -> None:
    """As if the open period's hour had passed: one more upload's publish closes it into a
    chain file; waits until the store's current.json names it (written after it)."""
    before = published_head(store)
    age_open_period(sink.data_dir)
    one_segment_each(sink, [message])
    wait_until(lambda: published_head(store) > before, "a closed chain file", timeout=60)


def published_head(store: Store) -> int:
    """The seq of the last closed file, as the sink's published current.json names it."""
    try:
        current = store.read_bytes(f"{published_dir(SINK_ID)}/{CURRENT}")
    except NotFound:
        return 0
    return int(orjson.loads(current)["head"]["seq"])


def chains(archive: str, *args: str) -> dict:
    """The summary line of `archiver verify --json` (every segment and chain checked)."""
    return orjson.loads(archiver_cli("verify", "--json", "--archive", archive, *args).stdout.splitlines()[-1])


def messages(archive: str) -> list[str]:
    out = archiver_cli("cat", "--json", "--archive", archive).stdout
    return [orjson.loads(line)["message"] for line in out.splitlines()]


def test_a_new_host_rebuilds_from_the_root_cap_and_carries_on(start_sink, grid1: LocalGrid, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gateway = "tahoe://" + grid1.gateway_url.split("://")[1]
    host_a = tmp_path / "host-a"
    sink_a = start_sink(host_a, "--port", str(low_port()), "--store", gateway,
                        env={"ARCHIVER_SINK_ID": SINK_ID, **PUBLISH})
    uploaded = ["a0", "a1", "a2"]
    one_segment_each(sink_a, uploaded[:-1])

    # The operator keeps the root write cap off the host (manifest export is how it is read out).
    caps = orjson.loads(archiver_cli("manifest", "export", "--include-write-caps", "--data-dir", str(host_a)).stdout)
    kept = tmp_path / "operator" / "root.url"
    kept.parent.mkdir()
    kept.write_text(f"{gateway}/{caps['root']['write_cap']}\n")
    read_url = f"{gateway}/{caps['root']['read_cap']}"
    reader = open_store(read_url, create=False)
    close_a_period(sink_a, reader, uploaded[-1])

    # The auditor, from the read cap alone: the chain A published, and its head.
    audit = chains(read_url)
    assert audit["ok"] and audit["checked"] == len(uploaded), audit["problems"]
    assert [c["sink_id"] for c in audit["chains"]] == [SINK_ID]
    head = audit["chains"][0]["head"]
    assert head

    # Acknowledged, but still in an open segment, on host A only, when host A is lost.
    lost = ["lost-1", "lost-2"]
    for message in lost:
        assert sink_a.post("/app", orjson.dumps({"message": message})).status_code == 200
    sink_a.kill()
    shutil.rmtree(host_a)

    host_b = tmp_path / "host-b"
    rebuilt = archiver_cli("manifest", "rebuild", "--data-dir", str(host_b), "--archive", f"@{kept}", "--walk")
    assert rebuilt.stdout.decode().strip() == \
        f"rebuilt {len(uploaded)} segment(s) of sink {SINK_ID} from the published and the tree"
    sink_b = start_sink(host_b, "--port", str(low_port()), "--store", f"@{kept}", env=PUBLISH)
    assert orjson.loads(archiver_cli("status", "--json", "--data-dir", str(host_b)).stdout)["sink_id"] == SINK_ID
    after = ["b0", "b1", "b2"]
    one_segment_each(sink_b, after[:-1])
    close_a_period(sink_b, reader, after[-1])
    assert sink_b.stop() == 0

    assert sorted(messages(read_url)) == sorted(uploaded + after)  # not the lost ones
    check = chains(read_url, "--expect-head", head)
    assert check["ok"] and check["checked"] == len(uploaded + after), check["problems"]
    # One chain, carried on: B's closed file follows A's head (a second chain would be a problem).
    assert [c["sink_id"] for c in check["chains"]] == [SINK_ID] and check["chains"][0]["head"] != head
    stored = [p for p in reader.walk_files("/app") if ".jsonl" in p]
    assert len(stored) == len(uploaded + after)  # nothing uploaded twice
