"""SIGKILL under concurrent load, several rounds: every record that got a 200 is archived."""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import psutil
import requests

from conftest import cat_json

ROUNDS = int(os.environ.get("TEST_CRASH_ROUNDS", "5"))
WORKERS = 6


def _load(url: str, round_no: int, worker: int, acked: set[str], lock: threading.Lock, stop: threading.Event) -> None:
    """HTTPHandler-style form posts (a connection each), small NDJSON batches (decoded on the
    sink's loop) and bulk ones (decoded by its worker processes), in turn."""
    n = 0
    for size in itertools.cycle([1, 5, 300]):
        if stop.is_set():
            break
        ids = [f"r{round_no}-w{worker}-{n + i}" for i in range(size)]
        n += len(ids)
        try:
            if len(ids) == 1:
                response = requests.post(f"{url}/form", data=f"msg={ids[0]}", timeout=10,
                                         headers={"Connection": "close"})
            else:
                body = b"\n".join(orjson.dumps({"message": i, "pad": "x" * 250}) for i in ids)
                response = requests.post(f"{url}/batch", data=body, timeout=10)
        except requests.RequestException:
            time.sleep(0.01)  # the sink is being killed; the stop event follows
            continue
        if response.status_code == 200:
            with lock:
                acked.update(ids)


def test_acked_records_survive_sigkill(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    seed = int(os.environ.get("TEST_CRASH_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    env = {"ARCHIVER_SEGMENTS_MAX_RECORDS": "40"}  # constant sealing, so kills land mid-seal too
    acked: set[str] = set()
    lock = threading.Lock()
    per_round = []
    workers: list[psutil.Process] = []
    for round_no in range(ROUNDS):
        sink = start_sink(data_dir, env=env)
        stop = threading.Event()
        threads = [
            threading.Thread(target=_load, args=(sink.url, round_no, w, acked, lock, stop)) for w in range(WORKERS)
        ]
        before = len(acked)
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.5, 2.0))  # on purpose: the kill lands at a random point of the load
        workers.extend(psutil.Process(sink.proc.pid).children())
        sink.kill()
        stop.set()
        for thread in threads:
            thread.join(30)
        per_round.append(len(acked) - before)

    final = start_sink(data_dir, env=env)
    assert final.stop() == 0
    archived = Counter(r["message"] for r in cat_json(data_dir) if r["stream"] in ("form", "batch"))
    lost = acked - set(archived)
    duplicates = sum(count - 1 for count in archived.values() if count > 1)
    print(f"seed={seed} acked per round={per_round} archived={len(archived)} duplicates={duplicates}")
    assert all(count > 0 for count in per_round), per_round
    assert not lost, f"seed {seed}: {len(lost)} acked records lost, e.g. {sorted(lost)[:5]}"
    assert duplicates == 0, f"seed {seed}: a record was archived twice"
    assert not list((data_dir / "spool" / "open").glob("*/*.jsonl"))
    assert workers and not psutil.wait_procs(workers, timeout=10)[1], "decode workers outlived their sink"
