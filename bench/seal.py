"""Sealing: segment compression, zlib-ng (what the seal uses) against the standard library's
gzip (zlib), same bytes, same run.

A segment of --records canonical records is built from varied lines (HTTP access lines with
ids and latencies, dpkg-style package lines, syslog-ng JSON, python-logstash JSON), as the
sink encodes them, and compressed the way archiver/spool/sealing.py does (a gzip member, no
file name, mtime 0, written in the seal's blocks) by each compressor at each level, taken in
turn each round; best of --rounds. Prints MB/s of segment, CPU µs a record and the compression
ratio; then the whole seal (``seal_segment``: compression, sha256, index, fsyncs) on the same
segment as the sink seals it (its lines counted and indexed as they were written, in batches of
1,000), CPU µs a record.
Run: .venv/bin/python bench/seal.py [--records N] [--rounds N]
"""

from __future__ import annotations

import argparse
import gzip
import io
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable

from zlib_ng import gzip_ng

from archiver.format.layout import DataDir
from archiver.format.record import Context, Lines, encode_lines
from archiver.format.segment import SegmentTally
from archiver.ingest.decode.jsonbody import decode_lines
from archiver.spool import sealing

AGENTS = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0", "curl/8.5.0",
          "python-requests/2.31", "Go-http-client/1.1")
PACKAGES = ("libc6:amd64 2.36-9+deb12u4", "python3.11:amd64 3.11.2-6", "openssl:amd64 3.0.11-1~deb12u2",
            "nginx-common:all 1.22.1-9", "tzdata:all 2024a-0+deb12u1")


def varied_lines(count: int, seed: int = 7) -> list[bytes]:
    """JSON lines as clients send them, with the variety real logs have (ids, numbers, paths)."""
    rng = random.Random(seed)
    lines = []
    for n in range(count):
        kind = n % 4
        second = f"2026-11-23T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}"
        if kind == 0:
            lines.append(
                f'{{"@timestamp":"{second}.{rng.randrange(1000):03d}Z","level":"{rng.choice(["INFO", "INFO", "WARN", "ERROR"])}",'
                f'"logger":"app.web","message":"GET /api/v1/items/{rng.randrange(10**6)}?q={rng.getrandbits(40):x} '
                f'{rng.choice([200, 200, 200, 404, 500])} in {rng.random() * 300:.2f} ms","request_id":"{rng.getrandbits(64):016x}",'
                f'"user_agent":"{rng.choice(AGENTS)}","client":"10.0.{rng.randrange(256)}.{rng.randrange(256)}"}}'.encode())
        elif kind == 1:
            lines.append(
                f'{{"@timestamp":"{second}Z","logger":"dpkg","message":"status {rng.choice(["installed", "unpacked", "half-configured"])} '
                f'{rng.choice(PACKAGES)}"}}'.encode())
        elif kind == 2:
            lines.append(
                f'{{"DATE":"Nov 23 {second[11:]}","HOST":"web{rng.randrange(8):02d}","PROGRAM":"{rng.choice(["sshd", "cron", "nginx"])}",'
                f'"PID":"{rng.randrange(30000)}","PRIORITY":"info","FACILITY":"auth","MESSAGE":"Accepted publickey for deploy from '
                f'10.0.{rng.randrange(256)}.{rng.randrange(256)} port {rng.randrange(65536)} ssh2: ED25519 SHA256:'
                f'{rng.getrandbits(120):030x}","SOURCEIP":"127.0.0.1"}}'.encode())
        else:
            lines.append(
                f'{{"@timestamp":"{second}.{rng.randrange(1000):03d}Z","@version":"1","host":"web01","level":"INFO",'
                f'"message":"order {rng.randrange(10**7)} paid in {rng.randrange(2000)} ms","pid":{rng.randrange(30000)},'
                f'"logger_name":"shop.orders","extra":{{"func_name":"pay","line":{rng.randrange(900)},'
                f'"thread_name":"MainThread","user":"u{rng.randrange(5000)}"}}}}'.encode())
    return lines


Compressor = Callable[[BinaryIO, int], BinaryIO]
COMPRESSORS: dict[str, Compressor] = {
    "zlib-ng (archiver)": lambda out, level: gzip_ng.GzipNGFile(filename="", mode="wb", fileobj=out,
                                                                compresslevel=level, mtime=0),
    "stdlib gzip (zlib)": lambda out, level: gzip.GzipFile(filename="", mode="wb", fileobj=out,
                                                           compresslevel=level, mtime=0),
}


def compress(segment: bytes, make: Compressor, level: int) -> tuple[float, int]:
    """CPU seconds and compressed bytes of one pass, in the seal's blocks."""
    out = io.BytesIO()
    start = time.process_time()
    with make(out, level) as packed:
        for at in range(0, len(segment), sealing._BLOCK_BYTES):
            packed.write(segment[at:at + sealing._BLOCK_BYTES])
    return time.process_time() - start, len(out.getvalue())


def whole_seal(batches: list[Lines], rounds: int) -> float:
    """CPU seconds of the best ``seal_segment`` of ``batches`` written to one segment (gzip
    level 6)."""
    best = float("inf")
    with tempfile.TemporaryDirectory(prefix="archiver-seal-") as tmp:
        for round_ in range(rounds):
            data_dir = DataDir(Path(tmp) / f"data-{round_}")
            source = Path(tmp) / f"open-{round_}.jsonl"
            source.write_bytes(b"".join(lines.data for lines in batches))
            known = SegmentTally()
            for lines in batches:
                known.add_lines(lines)
            start = time.process_time()
            sealing.seal_segment(data_dir, "app", f"segment-{round_}", source, "gzip", 6, known)
            best = min(best, time.process_time() - start)
            shutil.rmtree(data_dir.root)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    decoded = decode_lines(b"\n".join(varied_lines(args.records)), Context("app", "127.0.0.1", time.time()))
    batches = [encode_lines(decoded.records[at:at + 1000]) for at in range(0, len(decoded.records), 1000)]
    segment = b"".join(lines.data for lines in batches)
    print(f"a segment of {args.records} records, {len(segment) / 1e6:.1f} MB ({len(segment) / args.records:.0f} B a record); "
          f"best of {args.rounds} rounds, the compressors taken in turn\n")
    print("| compressor | level | MB/s | CPU µs a record | ratio |")
    print("|---|---:|---:|---:|---:|")
    best: dict[tuple[str, int], tuple[float, int]] = {}
    for _ in range(args.rounds):
        for level in (1, 6, 9):
            for name, make in COMPRESSORS.items():
                seconds, size = compress(segment, make, level)
                if seconds < best.get((name, level), (float("inf"), 0))[0]:
                    best[name, level] = (seconds, size)
    for (name, level), (seconds, size) in sorted(best.items(), key=lambda item: (item[0][1], item[0][0])):
        print(f"| {name} | {level} | {len(segment) / seconds / 1e6:.0f} | {seconds / args.records * 1e6:.2f} "
              f"| {len(segment) / size:.2f} |")
    ours, theirs = best["zlib-ng (archiver)", 6], best["stdlib gzip (zlib)", 6]
    print(f"\nlevel 6 (the default): zlib-ng {theirs[0] / ours[0]:.2f}x as fast as zlib, "
          f"{ours[1] / theirs[1]:.3f}x its size")
    print(f"the whole seal (seal_segment, gzip level 6): {whole_seal(batches, args.rounds) / args.records * 1e6:.2f} "
          "µs of CPU a record")


if __name__ == "__main__":
    main()
