"""Memory under sustained load: the sink's RSS, spool and queues during --minutes at 80% of its max rate.

A real sink (fsync=always) uploads to a one-node Tahoe grid (`--store tahoe://gateway`: the sink
makes its own root), set so that many seal -> upload -> verify -> prune cycles happen during the
run: segments of --segment-mb, upload every 5 s (and at each seal), verify and prune every 10 s,
local copies kept 30 s after their upload. Load is bench/ingest_http.py's own: HTTPHandler's
request, a connection per record, from load processes of their own.
1. Max rate: closed loop, --concurrency clients for --probe seconds.
2. Open loop at --load (0.8) of that for --minutes: each request starts at its scheduled time,
   whatever the sink's state. Every second: RSS of the sink process plus its child processes
   (its decode worker pool; the grid's nodes are separate processes, not counted),
   and GET /_status: spool_bytes, the upload backlog, segments by state, seals in progress,
   answers by status code; and the sink's open file descriptors (connections in progress).
Prints a table and "peak RSS NN MB (target < 150 MB)".
Run: .venv/bin/python bench/memory.py [--minutes M] [--load F] [--segment-mb MB] [--samples FILE]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import orjson
import psutil
import requests
from common import one_node_grid, stop
from ingest_http import load_pool, max_rate, run_load, start_archiver

from archiver.app.service import grid_store_url

MB = 1024 * 1024
# Short enough that pruning happens many times in a run; every other setting is the default.
SINK_ENV = {
    "ARCHIVER_UPLOADER_INTERVAL": "5s",
    "ARCHIVER_UPLOADER_VERIFY_INTERVAL": "10s",
    "ARCHIVER_UPLOADER_PRUNE_INTERVAL": "10s",
    "ARCHIVER_UPLOADER_KEEP_LOCAL": "30s",
}


@contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Processes started inside write their stderr to ``path``: the sink's log stays out of the
    report, and its size is a figure of its own (an overloaded sink logs every failed accept)."""
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class Sampler(threading.Thread):
    """Once a second until stopped: the sink's memory and descriptors, and its /_status figures."""

    def __init__(self, pid: int, status_url: str) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.status_url = status_url
        self.samples: list[dict[str, Any]] = []
        self.failures = 0
        self.phase = "idle"
        self._done = threading.Event()

    def run(self) -> None:
        status: dict[str, Any] = {}
        with requests.Session() as session:
            while not self._done.wait(1.0 - time.monotonic() % 1.0):
                try:
                    children = self.proc.children(recursive=True)
                    children_rss = sum(child.memory_info().rss for child in children)
                    sample = {"t": time.monotonic(), "phase": self.phase, "rss": self.proc.memory_info().rss + children_rss,
                              "children_rss": children_rss, "children": len(children), "fds": self.proc.num_fds(),
                              "threads": self.proc.num_threads()}
                except psutil.Error:
                    continue  # the sink is gone
                try:
                    status, sample["fresh"] = self.status(session), True
                except (requests.RequestException, ValueError):
                    self.failures += 1  # an overloaded sink: its last figures stand in
                    sample["fresh"] = False
                if status:
                    self.samples.append({**sample, **status})

    def status(self, session: requests.Session) -> dict[str, Any]:
        status = session.get(self.status_url, timeout=0.9).json()  # within the second
        return {
            "spool_bytes": status["spool_bytes"], "backlog_bytes": status["backlog_bytes"],
            "sealing": status["sealing"], "segments": status["segments"], "responses": status["responses"],
            "sealed_total": status["segments_sealed"],
        }

    def stop(self) -> None:
        self._done.set()
        self.join()

    def phase_samples(self, phase: str) -> list[dict[str, Any]]:
        return [s for s in self.samples if s["phase"] == phase]


def count(sample: dict[str, Any], code: str) -> int:
    return int(sample["responses"].get(code, 0))


def stored(sample: dict[str, Any]) -> int:
    """Segments uploaded so far, whatever happened to them since."""
    segments = sample["segments"]
    return int(segments["uploaded"] + segments["verified"] + segments["pruned"])


def report(args: argparse.Namespace, probe: dict[str, float], loaded: dict[str, float], sampler: Sampler) -> None:
    run = sampler.phase_samples("load")
    first, last = run[0], run[-1]
    peak = max(run, key=lambda s: s["rss"])
    probe_peak = max(s["rss"] for s in sampler.phase_samples("probe"))
    idle = sampler.phase_samples("idle")[0]["rss"]
    rows = [
        (f"max rate ({args.probe:.0f} s closed loop, {args.concurrency} clients)", f"{probe['rate']:.0f} records/s"),
        (f"offered rate ({args.load:.0%} of max, open loop, {args.minutes:g} min)", f"{loaded['offered']:.0f} records/s"),
        ("achieved rate (200s / s)", f"{loaded['rate']:.0f} records/s"),
        ("latency p50 / p99 from the scheduled start", f"{loaded['p50']:.1f} / {loaded['p99']:.1f} ms"),
        ("errors at the client (non-200 or no answer)", f"{loaded['errors']:.0f}"),
        ("503 answers (spool full, or the spool failed) / other 5xx, by the sink's count",
         f"{count(last, '503') - count(first, '503')} / "
         f"{sum(count(last, c) - count(first, c) for c in last['responses'] if c.startswith('5') and c != '503')}"),
        ("RSS idle after start / peak during the max-rate probe", f"{idle / MB:.1f} / {probe_peak / MB:.1f} MB"),
        ("RSS at start / peak / end of the run", f"{first['rss'] / MB:.1f} / {peak['rss'] / MB:.1f} / {last['rss'] / MB:.1f} MB"),
        ("of the peak: the sink process / its child processes",
         f"{(peak['rss'] - peak['children_rss']) / MB:.1f} / {peak['children_rss'] / MB:.1f} MB ({peak['children']} process(es))"),
        ("spool bytes start / peak / end", f"{first['spool_bytes'] / MB:.1f} / "
         f"{max(s['spool_bytes'] for s in run) / MB:.1f} / {last['spool_bytes'] / MB:.1f} MB"),
        ("upload backlog (sealed, not uploaded) peak", f"{max(s['backlog_bytes'] for s in run) / MB:.1f} MB"),
        ("seals in progress peak", f"{max(s['sealing'] for s in run)}"),
        ("open descriptors start / peak / end", f"{first['fds']} / {max(s['fds'] for s in run)} / {last['fds']}"),
        ("threads start / peak", f"{first['threads']} / {max(s['threads'] for s in run)}"),
        ("segments sealed / uploaded / pruned during the run",
         f"{last['sealed_total'] - first['sealed_total']} / {stored(last) - stored(first)} / "
         f"{last['segments']['pruned'] - first['segments']['pruned']}"),
        ("segments by state at the end", ", ".join(f"{k} {v}" for k, v in last["segments"].items())),
        ("requests still unanswered when the schedule ended: seconds to drain them",
         f"{max(0.0, loaded['elapsed'] - args.minutes * 60):.1f} s"),
        ("lines the sink logged (WARNING and up)", f"{loaded['log_lines']:.0f}"),
        ("samples (of which /_status unanswered within 0.9 s: its figures from the sample before)",
         f"{len(run)} ({sampler.failures})"),
    ]
    print(f"\nSink memory under load: fsync=always, store on a one-node Tahoe grid, segments of "
          f"{args.segment_mb:g} MiB, upload every 5 s, verify and prune every 10 s, keep_local 30 s. "
          "RSS: the sink process plus its child processes, sampled every second.\n")
    print("| figure | value |")
    print("|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print("\nBy minute; the /_status figures (200s, spool, pruned) are as of its last answer in the minute.\n")
    print("| minute | /_status answers | 200s/s | RSS max MB | descriptors max | spool max MB | segments pruned |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    before = first
    for minute in range(int((last["t"] - first["t"]) // 60) + 1):
        part = [s for s in run if (s["t"] - first["t"]) // 60 == minute]
        rate = (count(part[-1], "200") - count(before, "200")) / max(1.0, part[-1]["t"] - before["t"])
        print(f"| {minute + 1} | {sum(s['fresh'] for s in part)} | {rate:.0f} | {max(s['rss'] for s in part) / MB:.1f} | "
              f"{max(s['fds'] for s in part)} | {max(s['spool_bytes'] for s in part) / MB:.1f} | "
              f"{part[-1]['segments']['pruned']} |")
        before = part[-1]
    print(f"\npeak RSS {peak['rss'] / MB:.0f} MB (target < 150 MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--load", type=float, default=0.8, help="offered rate as a fraction of the max rate")
    parser.add_argument("--probe", type=float, default=15.0, help="seconds of the closed-loop max-rate run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--load-procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--segment-mb", type=float, default=8.0, help="segments.max_bytes in MiB")
    parser.add_argument("--samples", type=Path, help="also write every sample to this file, a JSON object a line")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="archiver-memory-bench-") as tmp, one_node_grid(Path(tmp)) as grid, \
            load_pool(args.load_procs) as pool:
        env = {**SINK_ENV, "ARCHIVER_SEGMENTS_MAX_BYTES": f"{int(args.segment_mb * MB)}"}
        sink_log = Path(tmp) / "sink.log"
        with stderr_to(sink_log):
            proc, port = start_archiver(Path(tmp), "--store", grid_store_url(grid), env=env)
        sampler = Sampler(proc.pid, f"http://127.0.0.1:{port}/_status")
        drain = threading.Timer(args.minutes * 60, lambda: setattr(sampler, "phase", "drain"))
        try:
            sampler.start()
            time.sleep(2)
            sampler.phase = "probe"
            probe = max_rate([(proc, port)], pool, argparse.Namespace(
                duration=args.probe, concurrency=args.concurrency, load_procs=args.load_procs))
            print(f"max rate {probe['rate']:.0f} records/s; now {args.minutes:g} min at {args.load:.0%} of it", flush=True)
            offered = probe["rate"] * args.load
            sampler.phase = "load"
            drain.start()
            loaded = run_load(pool, args.load_procs, [port], args.minutes * 60, rate=offered)
            loaded["offered"] = offered
        finally:
            drain.cancel()
            sampler.stop()
            stop(proc)
        with sink_log.open("rb") as log:
            loaded["log_lines"] = sum(1 for _ in log)
    if args.samples:
        args.samples.write_bytes(b"".join(orjson.dumps(s, option=orjson.OPT_APPEND_NEWLINE) for s in sampler.samples))
    report(args, probe, loaded, sampler)


if __name__ == "__main__":
    main()
