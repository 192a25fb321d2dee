"""The baseline: a log sink written the plain way with the standard library.

ThreadingHTTPServer, one JSON line per request, written and fsynced before the 200, as a
careful first version would do it. Usage: python bench/plain_sink.py PORT FILE
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        line = json.dumps(dict(parse_qsl(body.decode(), keep_blank_values=True))) + "\n"
        with LOCK:
            OUT.write(line)
            OUT.flush()
            os.fsync(OUT.fileno())
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # HTTPHandler-style clients close right after the headers: resets are normal


LOCK = threading.Lock()
OUT = open(sys.argv[2], "a")

if __name__ == "__main__":
    server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
    print("ready", flush=True)
    server.serve_forever()
