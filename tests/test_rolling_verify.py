"""Rolling verification: subsets that partition the archive, quick checks that read no data,
JSON lines, exit statuses, and the sink's daily read back of one part."""

from __future__ import annotations

import math
import random
import socket
from contextlib import closing
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pytest
from click.testing import CliRunner
from fs.osfs import OSFS
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.app.cli import main as cli_main
from archiver.format.layout import DataDir
from archiver.format.manifest import Manifest
from archiver.format.subset import Subset, part_of
from archiver.read.reader import Archive, data_dir_archive
from archiver.ship.readback import LAST_RUN, ReadBack, todays_part
from archiver.spool.rotation import RotationPolicy
from archiver.store import FsStore, Health, HealthCheck, Store
from minimal_store import make_store
from test_reader import T0, upload_and_prune, write_archive

DAY = 86400
segment_ids = st.lists(st.from_regex(r"[0-9]{8}T[0-9]{6}-[a-z0-9]{1,12}-[0-9]{1,6}", fullmatch=True), unique=True, max_size=60)


@given(ids=segment_ids, parts=st.integers(1, 40))
@settings(max_examples=200, deadline=None)
def test_parts_1_to_t_cover_every_segment_exactly_once(ids: list[str], parts: int) -> None:
    chosen = [Subset(part, parts).choose(ids) for part in range(1, parts + 1)]
    assert sum(len(subset) for subset in chosen) == len(ids)
    assert set().union(*chosen) == set(ids)
    assert all(Subset(part_of(i, parts), parts).choose([i]) == {i} for i in ids)
    assert chosen == [Subset(part, parts).choose(list(reversed(ids))) for part in range(1, parts + 1)]  # order-free


@given(ids=segment_ids, percent=st.floats(0.1, 100))
@settings(max_examples=100, deadline=None)
def test_a_percentage_is_a_random_sample_of_at_least_one(ids: list[str], percent: float) -> None:
    sample = Subset(percent=percent).choose(ids, random.Random(1))
    assert sample <= set(ids) and len(sample) == min(len(ids), math.ceil(len(ids) * percent / 100))
    assert bool(sample) == bool(ids)


@pytest.mark.parametrize("text, subset", [("3/30", Subset(3, 30)), ("1/1", Subset(1, 1)), ("5%", Subset(percent=5)), ("0.5%", Subset(percent=0.5))])
def test_subsets_parse_as_restic_writes_them(text: str, subset: Subset) -> None:
    assert Subset.parse(text) == subset and str(subset) == text


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "/3", "0%", "101%", "1/0", "abc"])
def test_bad_subsets_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Subset.parse(text)


class Counting(FsStore):
    """A directory store that counts what is read."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(OSFS(str(root)))
        self.opened: list[str] = []
        self.stats: list[str] = []

    def open(self, path: str) -> BinaryIO:
        file = super().open(path)
        self.opened.append(path)
        return file

    def stat(self, path: str) -> Any:
        self.stats.append(path)
        return super().stat(path)


class CountingGrid(Counting, HealthCheck):
    """... and answers a health check, as a grid where every file is healthy."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.checks: list[tuple[str, bool]] = []

    def check(self, path: str, *, verify: bool = True, repair: bool = False) -> Health:
        self.checks.append((path, verify))
        return Health(healthy=True, happiness=1)


@pytest.fixture
def pruned(tmp_path: Path) -> Path:
    """A data dir of 24 one-record segments, all uploaded to TMP/store and pruned locally."""
    data = tmp_path / "data"
    write_archive(data, [{"created": T0 + n, "message": f"m{n}"} for n in range(24)], RotationPolicy(10**9, 1, 3600))
    upload_and_prune(data, make_store("osfs", tmp_path / "store"))
    return data


def archive_over(data: Path, store: Store) -> Archive:
    return Archive(lambda *_: list(Manifest(data).segments()), data_dir=DataDir(data), store=lambda: store)


def test_a_subset_reads_only_its_segments_and_t_runs_read_all_once(pruned: Path, tmp_path: Path) -> None:
    rows = {row.id: row.store_path for row in Manifest(pruned).segments()}
    assert len(rows) == 24
    read: list[str] = []
    for part in range(1, 6):
        store = Counting(tmp_path / "store")
        report = archive_over(pruned, store).verify(subset=Subset(part, 5))
        mine = {i for i in rows if part_of(i, 5) == part}
        assert report.ok and report.checked == len(mine)
        assert sorted(store.opened) == sorted(rows[i] for i in mine) and not store.stats
        read += store.opened
    assert sorted(read) == sorted(rows.values())


def test_quick_reads_no_data(pruned: Path, tmp_path: Path) -> None:
    plain = Counting(tmp_path / "store")
    assert archive_over(pruned, plain).verify(quick=True).ok
    assert not plain.opened and len(plain.stats) == 24
    grid = CountingGrid(tmp_path / "store")
    assert archive_over(pruned, grid).verify(quick=True).ok
    assert not grid.opened and not grid.stats and len(grid.checks) == 24 and not any(verify for _, verify in grid.checks)
    both = Counting(tmp_path / "store")
    report = archive_over(pruned, both).verify(quick=True, subset=Subset(2, 3))
    assert report.checked == 24 and len(both.opened) + len(both.stats) == 24
    assert {path for path in both.opened} == {r.store_path for r in Manifest(pruned).segments() if part_of(r.id, 3) == 2}


def damage(data: Path, store_dir: Path) -> tuple[str, str]:
    """Remove one stored segment and overwrite another with bytes of the same size: (removed, corrupted)."""
    with closing(Manifest(data)) as manifest:
        manifest.set_meta("store_url", f"osfs://{store_dir}")
        first, second = list(manifest.segments())[:2]
    (store_dir / first.store_path.lstrip("/")).unlink()
    corrupted = store_dir / second.store_path.lstrip("/")
    corrupted.write_bytes(b"x" * corrupted.stat().st_size)
    return first.id, second.id


def verify(*args: str) -> Any:
    return CliRunner().invoke(cli_main, ["verify", *args])


def test_exit_statuses_and_json_lines(pruned: Path, tmp_path: Path) -> None:
    with closing(Manifest(pruned)) as manifest:
        manifest.set_meta("store_url", f"osfs://{tmp_path / 'store'}")
    assert verify("--data-dir", str(pruned)).exit_code == 0
    removed, corrupted = damage(pruned, tmp_path / "store")

    full = verify("--data-dir", str(pruned))
    assert full.exit_code == 1 and f"{removed}  store:" in full.output and f"{corrupted}  store: the stored copy does not match" in full.output
    assert "24 segment(s) checked, 2 problem(s)" in full.output
    quick = verify("--quick", "--data-dir", str(pruned))
    assert quick.exit_code == 1 and removed in quick.output and corrupted not in quick.output  # same size: only a read tells

    lines = [orjson.loads(line) for line in verify("--json", "--data-dir", str(pruned)).output.splitlines()]
    per_segment, summary = lines[:-1], lines[-1]
    assert len(per_segment) == 24 and all(line["check"] == "read" for line in per_segment)
    assert {line["segment"] for line in per_segment if not line["ok"]} == {removed, corrupted}
    assert all(line["where"] == "store" and line["problem"] for line in per_segment if not line["ok"])
    assert summary["checked"] == 24 and summary["ok"] is False and len(summary["problems"]) == 2

    part = part_of(corrupted, 4)
    subset = verify("--json", "--read-data-subset", f"{part}/4", "--data-dir", str(pruned))
    lines = [orjson.loads(line) for line in subset.output.splitlines()]
    assert subset.exit_code == 1 and lines[-1]["subset"] == f"{part}/4" and corrupted in {p["segment"] for p in lines[-1]["problems"]}
    assert {line["segment"] for line in lines[:-1]} == {r.id for r in Manifest(pruned).segments() if part_of(r.id, 4) == part}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_could_not_run_is_3_and_bad_arguments_2(pruned: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert verify("--data-dir", str(tmp_path / "empty")).exit_code == 3  # no manifest
    unreachable = f"tahoe://127.0.0.1:{free_port()}/URI:DIR2:aaaaaaaaaaaaaaaaaaaaaaaaaa:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
    assert verify("--archive", unreachable).exit_code == 3
    with closing(Manifest(pruned)) as manifest:
        manifest.set_meta("store_url", unreachable)
    gone = verify("--quick", "--data-dir", str(pruned))
    assert gone.exit_code == 3 and "cannot reach" in gone.output and "bbbbbbbbbbbb" not in gone.output, gone.output
    for wrong in ("0/4", "5/4", "x"):
        assert verify("--read-data-subset", wrong, "--data-dir", str(pruned)).exit_code == 2
    help_text = verify("--help").output
    assert "3 could not check" in help_text and "--read-data-subset" in help_text


def test_the_daily_read_back_reads_one_part_a_day_and_reports_problems(pruned: Path, tmp_path: Path) -> None:
    """Days in a row read parts 1..T once each; a restart on the same day reads nothing."""
    rows = {row.id: row.store_path for row in Manifest(pruned).segments()}
    removed, corrupted = damage(pruned, tmp_path / "store")
    store, problems = Counting(tmp_path / "store"), []
    now = [float(T0)]
    read_back = ReadBack(DataDir(pruned), lambda: store, 3, on_problem=problems.append, clock=lambda: now[0])
    failed = 0
    for _ in range(3):
        result = read_back.run_due()
        assert result["checked"] == len({i for i in rows if part_of(i, 3) == todays_part(now[0], 3).part})
        failed += result["failed"]
        assert read_back.run_due() == {"checked": 0, "failed": 0}  # the same day again
        now[0] += DAY
    assert sorted(store.opened) == sorted(path for i, path in rows.items() if i != removed)
    assert failed == 2 and sorted(message.split(":")[0] for message in problems) == sorted(f"read back of {i}" for i in (removed, corrupted))
    with closing(Manifest(pruned)) as manifest:
        last = orjson.loads(manifest.get_meta(LAST_RUN) or "{}")
    assert last["part"] == str(todays_part(now[0] - DAY, 3)) and set(last) == {"day", "part", "checked", "failed"}
