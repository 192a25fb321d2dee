"""Lease renewal on a real grid, proven by the lease expiry times in the storage servers' share
files (Tahoe's expiry crawler starts minutes after boot and cycles in hours: it cannot be
watched in a test). The share files are read with the Tahoe venv's own share classes, which
know both container formats (immutable, mutable) and both lease schemas."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import orjson

from archiver.app.grid import LocalGrid
from conftest import Sink, archiver_cli

READ_LEASES = """
import json, pathlib, sys
from allmydata.storage.shares import get_share_file
found = {}
for root in sys.argv[1:]:
    for share in sorted(pathlib.Path(root).glob("*/*/*")):
        if share.parent.parent.name == "incoming":
            continue
        leases = list(get_share_file(str(share)).get_leases())
        found[str(share)] = [lease.get_expiration_time() for lease in leases]
print(json.dumps(found))
"""
LEASE_SECONDS = 31 * 86400


def share_leases(grid: LocalGrid) -> dict[str, list[int]]:
    """Every share file on every storage node: the expiry time of each of its leases."""
    python = Path(grid.tahoe).parent / "python"
    roots = [str(grid.node_dir(node.name) / "storage" / "shares") for node in grid.spec.nodes]
    out = subprocess.run([str(python), "-c", READ_LEASES, *roots], capture_output=True, check=True, timeout=120)
    return orjson.loads(out.stdout)


def reachable(grid: LocalGrid, cap: str) -> set[str]:
    """The storage index of every object reachable from ``cap``: what renewal must keep. A share
    of something no longer linked (a published file's earlier copy) rightly keeps its first lease."""
    out = subprocess.run([grid.tahoe, "-d", str(grid.node_dir(grid.gateway_node)), "manifest", "--storage-index", cap],
                         capture_output=True, check=True, timeout=120)
    return {line.strip() for line in out.stdout.decode().splitlines() if line.strip()}


def wait_past(moment: float) -> None:
    """Lease times have one-second resolution: let the clock pass ``moment`` by two seconds so
    a renewal shows as a later expiry."""
    while time.time() < moment + 2:
        time.sleep(0.1)


def test_a_renewal_pass_moves_every_lease_forward(grid3: LocalGrid, tmp_path: Path) -> None:
    data = tmp_path / "data"
    sink = Sink(data, ["--store", "tahoe://" + grid3.gateway_url.split("://")[1]]).start()
    try:
        for n in range(3):
            assert sink.post(f"/app{n}", f"msg=record {n}").status_code == 200
        archiver_cli("flush", "--data-dir", str(data))
        status = orjson.loads(archiver_cli("status", "--json", "--data-dir", str(data)).stdout)
        read_cap = status["store"]["root_read_cap"]
        assert status["leases"]["objects"] >= 3 * 2 + 1  # segments, their directories, the root, ...
        assert b"leases: " in archiver_cli("status", "--data-dir", str(data)).stdout
    finally:
        assert sink.stop() == 0
    # The session's grid holds other tests' archives too: only this archive's shares count.
    kept = reachable(grid3, read_cap)
    before = {share: leases for share, leases in share_leases(grid3).items() if Path(share).parent.name in kept}
    assert {Path(share).parent.name for share in before} == kept
    assert all(len(leases) == 1 for leases in before.values())
    uploaded = max(max(leases) for leases in before.values()) - LEASE_SECONDS

    wait_past(uploaded)
    result = archiver_cli("leases", "renew", "--data-dir", str(data))
    assert b"0 failed" in result.stdout
    renewed = share_leases(grid3)
    assert renewed.keys() >= before.keys()  # segments, their directories, the root, the published manifest
    for share, leases in before.items():
        assert len(renewed[share]) == 1, f"{share}: a second lease instead of a renewal"
        assert renewed[share][0] > leases[0], f"{share} was not renewed"
        assert renewed[share][0] >= time.time() + LEASE_SECONDS - 60

    # From the root's READ cap alone, on no data dir: everything reachable is renewed again.
    wait_past(max(max(renewed[share]) for share in before) - LEASE_SECONDS)
    url = "tahoe://" + grid3.gateway_url.split("://")[1] + "/" + read_cap
    elsewhere = archiver_cli("leases", "renew", "--archive", url)
    assert b"0 failed" in elsewhere.stdout
    again = share_leases(grid3)
    assert all(again[share][0] > renewed[share][0] for share in before)
