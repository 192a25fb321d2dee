"""The baseline: a log sink written the plain way with the standard library.

A single-threaded socketserver.TCPServer whose BaseHTTPRequestHandler reads the form body,
parse_qs-es it and writes one JSON line to a file, then answers 200. Without --fsync the line
is in the page cache when the 200 goes out (not durable); with it, one fsync per record comes
first (durable, as archiver's default fsync=always).
Usage: python bench/plain_sink.py [--fsync] PORT FILE
"""

from __future__ import annotations

import argparse
import json
import os
import socketserver
from http.server import BaseHTTPRequestHandler
from typing import TextIO
from urllib.parse import parse_qs


class Handler(BaseHTTPRequestHandler):
    out: TextIO
    fsync: bool

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.out.write(json.dumps(parse_qs(body.decode())) + "\n")
        self.out.flush()
        if self.fsync:
            os.fsync(self.out.fileno())
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: object) -> None:
        pass  # a line on stderr per request would be the baseline's largest cost, not its work


class Server(socketserver.TCPServer):
    allow_reuse_address = True
    # The default backlog of 5 drops the SYNs of 32 concurrent clients; each dropped one waits
    # a second for its retransmit, which would measure the kernel's timer, not the sink.
    request_queue_size = 1024

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a load generator drops its open connections when a run ends: broken pipes are normal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsync", action="store_true", help="fsync each record before its 200")
    parser.add_argument("port", type=int)
    parser.add_argument("file")
    args = parser.parse_args()
    with open(args.file, "a") as out:
        Handler.out, Handler.fsync = out, args.fsync
        with Server(("127.0.0.1", args.port), Handler) as server:
            server.serve_forever()


if __name__ == "__main__":
    main()
