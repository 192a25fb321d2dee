"""Readers never write: `ls`, `cat` and `verify` work on a data dir mounted read-only, while
the sink runs on it and after it stopped. The tests run as root, and file modes do not stop
root, so the data dir is bind-mounted read-only (a real mount; failing to mount fails the test)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

import orjson
import pytest

from conftest import Sink, archiver_cli, cat_json


@pytest.fixture
def read_only_view(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(data dir, the same directory mounted read-only elsewhere)."""
    data, view = tmp_path / "data", tmp_path / "view"
    data.mkdir()
    view.mkdir()
    subprocess.run(["mount", "--bind", str(data), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        yield data, view
    finally:
        subprocess.run(["umount", str(view)], check=True)


def _send(sink: Sink, messages: list[str]) -> None:
    for message in messages:
        assert sink.post("/app", f"msg={message}").status_code == 200
    archiver_cli("flush", "--data-dir", str(sink.data_dir))


def test_readers_work_on_a_read_only_mount_while_the_sink_runs_and_after(
    read_only_view: tuple[Path, Path], tmp_path: Path
) -> None:
    data, view = read_only_view
    with pytest.raises(OSError):
        (view / "probe").touch()
    (tmp_path / "store").mkdir()
    sink = Sink(data, ["--store", f"osfs://{tmp_path / 'store'}"]).start()
    try:
        _send(sink, ["one", "two"])
        assert [r["message"] for r in cat_json(view)] == ["one", "two"]
        listed = orjson.loads(archiver_cli("ls", "--json", "--data-dir", str(view)).stdout)
        assert [segment["records"] for segment in listed] == [2]
        assert archiver_cli("verify", "--data-dir", str(view)).returncode == 0
        _send(sink, ["three"])  # the sink writes on while the reader's view is read-only
        assert [r["message"] for r in cat_json(view)] == ["one", "two", "three"]
    finally:
        assert sink.stop() == 0
    assert not (data / "manifest.sqlite-shm").exists()  # a clean close: the immutable path
    assert [r["message"] for r in cat_json(view)] == ["one", "two", "three"]
    assert archiver_cli("verify", "--data-dir", str(view)).returncode == 0


def _manifest_of_schema(data: Path, version: int) -> None:
    """A manifest as an older archiver left it: today's, with what came after ``version`` removed."""
    from contextlib import closing
    import sqlite3

    from archiver.format.manifest import Manifest

    Manifest(data).close()
    with closing(sqlite3.connect(data / Manifest.FILENAME)) as db:
        db.execute("DROP TABLE imports")  # schema 8's only change
        db.execute(f"PRAGMA user_version = {version}")
        db.commit()


def test_a_reader_reads_a_manifest_the_sink_has_not_migrated_yet(read_only_view: tuple[Path, Path]) -> None:
    """Upgrading archiver before restarting the sink: a read-only reader still lists a schema 7
    manifest, since schema 8 added only a table readers never read; older ones need the sink."""
    from archiver.format.manifest import ManifestError, open_for_reading

    data, view = read_only_view
    _manifest_of_schema(data, 7)
    manifest = open_for_reading(view)
    try:
        assert manifest.read_only and manifest.schema_version == 7 and list(manifest.segments()) == []
    finally:
        manifest.close()
    _manifest_of_schema(data, 6)
    with pytest.raises(ManifestError, match="older archiver"):
        open_for_reading(view)
