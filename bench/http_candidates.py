"""Candidates for the HTTP hot path, side by side in one run: where a request's CPU goes.

Each row is a server that reads HTTPHandler's form body and answers `ok`, nothing written:
a bare aiohttp app (the framework archiver's routes, middleware and limits sit on), a bare
asyncio Protocol over httptools (llhttp, what uvicorn uses), and the plain stdlib socketserver
sink without fsync (bench/plain_sink.py, the issue's baseline). With --archiver REV=DIR, an
archiver sink (fsync=never) run from the source tree DIR (a `git worktree` of REV) is a row
too (once per --fsync policy), so a change is measured against what it replaces in the same run.
With --parts, archiver's protocol and ingest also run bare, with parts taken away, to show what
each part of a request costs.
Load: wrk (bench/wrk_load.py), a new connection per record, best of --rounds interleaved runs.
Run: .venv/bin/python bench/http_candidates.py [--archiver before=/tmp/wt --archiver after=.] [--fsync never,always]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

from common import start_sink, stop
from ingest_http import httphandler_request, listen_port, plain_starter, serving
from wrk_load import WrkRun, run_wrk, write_script

Starter = Callable[[Path], tuple["subprocess.Popen[bytes]", int]]

BARE_AIOHTTP = """
import sys
from aiohttp import web
async def ok(request):
    await request.read()
    return web.Response(text="ok\\n")
app = web.Application()
app.router.add_post("/{stream:.*}", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

BARE_HTTPTOOLS = """
import asyncio, sys, httptools
OK = b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain; charset=utf-8\\r\\nContent-Length: 3\\r\\n"
class P(asyncio.Protocol):
    def connection_made(self, transport):
        self.t, self.p, self.body = transport, httptools.HttpRequestParser(self), []
    def data_received(self, data):
        self.p.feed_data(data)
    def on_body(self, data):
        self.body.append(data)
    def on_message_complete(self):
        b"".join(self.body)
        self.body = []
        keep = self.p.should_keep_alive()
        self.t.write(OK + (b"\\r\\n" if keep else b"Connection: close\\r\\n\\r\\n") + b"ok\\n")
        if not keep:
            self.t.close()
async def main():
    server = await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    await server.serve_forever()
asyncio.run(main())
"""


# archiver's own hot path in a bare process, with parts of ingest taken away (--parts): what
# each part costs a request. HotPath and Receiver are the sink's; the sink around them (its
# listener, uploads, sealing, metrics page) is not there.
ARCHIVER_PARTS = """
import asyncio, socket, sys, tempfile, time
from pathlib import Path
from archiver.format.layout import DataDir
from archiver.format.record import Context
from archiver.ingest.auth import Authenticator
from archiver.ingest.counters import IngestCounters
from archiver.ingest.decoder import Decoder, decode_request
from archiver.ingest.hotpath import HotPath
from archiver.ingest.receive import Answer, HttpLimits, Receiver
from archiver.spool.rotation import RotationPolicy
from archiver.spool.writer import SegmentWriter
class Answering:
    counters, stopping, on_drained = IngestCounters(), False, []
    def unauthenticated(self, header):
        return None
    async def receive(self, request):
        async for _ in request.body.chunks():
            pass
        return Answer(200, b"ok\\n")
class Decoded(Decoder):
    batch = decode_request("POST", b"name=app&msg=hello&levelname=INFO", None, 2**20, Context("app", None, 0.0))
    async def run(self, heavy, decode, *args):
        return self.batch
async def main(part, port):
    if part == "protocol":
        receiver = Answering()
    else:
        writer = SegmentWriter(DataDir(Path(tempfile.mkdtemp())), "bench", RotationPolicy(2**40, 2**40, 3600),
                               fsync="never")
        await writer.start()
        decoder = Decoded(0) if part == "no-decoding" else Decoder(0)
        receiver = Receiver(writer, HttpLimits(), Authenticator(), decoder, IngestCounters())
    sock = socket.create_server(("127.0.0.1", port), backlog=1024)
    server = await asyncio.get_running_loop().create_server(HotPath(receiver, None, 65536), sock=sock)
    await server.serve_forever()
asyncio.run(main(sys.argv[2], int(sys.argv[1])))
"""
PARTS = {
    "protocol": "archiver's protocol, answering without ingest",
    "no-decoding": "archiver's protocol and ingest, a decoded batch ready (fsync=never)",
    "ingest": "archiver's protocol and ingest, fsync=never (no sink around it)",
}


def script_starter(source: str, *args: str) -> Starter:
    def start(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
        port = listen_port()
        return serving(subprocess.Popen([sys.executable, "-c", source, str(port), *args], stdout=subprocess.DEVNULL), port)

    return start


def archiver_starter(tree: Path, fsync: str) -> Starter:
    """archiver from the source tree ``tree`` (fsync=never: the framework's cost, not the disk's)."""

    def start(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
        port = listen_port()
        env = {"PYTHONPATH": str(tree.resolve()), "ARCHIVER_SPOOL_FSYNC": fsync}
        proc, _ = start_sink(workdir, "--port", str(port), env=env)
        return proc, port

    return start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--archiver", action="append", default=[], metavar="NAME=DIR",
                        help="an archiver row run from source tree DIR")
    parser.add_argument("--fsync", default="never", help="spool.fsync policies of the archiver rows, comma-separated")
    parser.add_argument("--parts", action="store_true",
                        help="rows of archiver's hot path with parts of ingest taken away: what each costs")
    args = parser.parse_args()
    table: dict[str, Starter] = {
        "bare aiohttp": script_starter(BARE_AIOHTTP),
        "bare httptools Protocol": script_starter(BARE_HTTPTOOLS),
        "plain stdlib sink, no fsync": plain_starter(fsync=False),
    }
    if args.parts:
        table.update({name: script_starter(ARCHIVER_PARTS, part) for part, name in PARTS.items()})
    for entry in args.archiver:
        name, _, tree = entry.partition("=")
        for fsync in args.fsync.split(","):
            table[f"archiver {name} (fsync={fsync})"] = archiver_starter(Path(tree), fsync)
    best: dict[str, WrkRun] = {}
    with tempfile.TemporaryDirectory(prefix="archiver-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        servers = {}
        for name, start in table.items():
            proc, port = start(workdir)
            stack.callback(stop, proc)
            servers[name] = (proc, port, write_script(workdir / f"wrk-{port}.lua", httphandler_request(port, close=True)))
        for proc, port, script in servers.values():
            run_wrk(port, [proc.pid], script, 1, args.connections, args.threads)  # warm-up
        for _ in range(args.rounds):
            for name, (proc, port, script) in servers.items():
                run = run_wrk(port, [proc.pid], script, args.duration, args.connections, args.threads)
                print(f"  {name}: {run.rate:.0f} req/s, {run.server_us():.0f} µs", file=sys.stderr)
                if name not in best or run.rate > best[name].rate:
                    best[name] = run
    base = best["plain stdlib sink, no fsync"]
    print(f"\n{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; wrk {args.connections} connections, "
          f"{args.duration} s a run, best of {args.rounds} interleaved rounds\n")
    print("| server | req/s | server CPU µs/req | x plain req/s | x plain CPU/req | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, run in best.items():
        print(f"| {name} | {run.rate:.0f} | {run.server_us():.0f} | {run.rate / base.rate:.2f} | "
              f"{run.server_us() / base.server_us():.2f} | {run.errors} |")


if __name__ == "__main__":
    main()
