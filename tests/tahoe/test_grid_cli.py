"""`archiver grid create|start|status|stop` drive a real grid, stopping nodes by PID."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from archiver.app.grid import GridError, LocalGrid
from conftest import archiver_cli


def test_grid_lifecycle_through_the_cli(tmp_path: Path) -> None:
    grid_dir = tmp_path / "grid"
    created = archiver_cli("grid", "create", str(grid_dir), "--nodes", "2", "--needed", "1", "--happy", "2")
    assert b"1-of-2, happy 2" in created.stdout
    try:
        archiver_cli("grid", "start", str(grid_dir))
        status = orjson.loads(archiver_cli("grid", "status", str(grid_dir), "--json").stdout)
        assert status["servers_connected"] == 2 and all(node["pid"] for node in status["nodes"])
        assert all(node["web_port"] < 32768 and node["tub_port"] < 32768 for node in status["nodes"][1:])
        grid = LocalGrid(grid_dir)
        root = grid.create_root()
        root.writetext("hello.txt", "over a grid started by the CLI")
        text = archiver_cli("grid", "status", str(grid_dir)).stdout.decode()
        assert "2 storage server(s) connected" in text and "URI:" not in text
    finally:
        archiver_cli("grid", "stop", str(grid_dir))
    status = orjson.loads(archiver_cli("grid", "status", str(grid_dir), "--json").stdout)
    assert not any(node["pid"] for node in status["nodes"])
    again = archiver_cli("grid", "create", str(grid_dir), check=False)
    assert again.returncode == 1 and b"already holds a grid" in again.stderr


def test_impossible_shapes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(GridError, match="every upload would fail"):
        LocalGrid.create(tmp_path / "g", nodes=2, happy=3, total=3)
    with pytest.raises(GridError, match="needed"):
        LocalGrid.create(tmp_path / "g", nodes=3, needed=4, total=3)
    missing = archiver_cli("grid", "start", str(tmp_path / "nothing"), check=False)
    assert missing.returncode == 1 and b"holds no grid" in missing.stderr


def test_the_configured_tahoe_is_used_or_refused(tmp_path: Path) -> None:
    config = tmp_path / "a.toml"
    config.write_text('[grid]\ntahoe = "/nonexistent/bin/tahoe"\n')
    refused = archiver_cli("grid", "create", str(tmp_path / "g"), "-c", str(config), check=False)
    assert refused.returncode == 1 and b"grid.tahoe = /nonexistent/bin/tahoe is not an executable" in refused.stderr
    assert not (tmp_path / "g" / "grid.json").exists()
