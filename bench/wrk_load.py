"""wrk as the HTTPHandler-style load generator: a new connection per record, driven from C.

A Python load generator takes much of the second core of a two-core machine, which the servers
then lack, and so compresses every ratio between them; wrk costs a fraction of that, and its own
CPU is measured (wait4) so a run shows it. The request is built here, never fetched: HTTPHandler's
bytes plus `Connection: close`, since wrk reconnects only when the answer closes, while
HTTPHandler opens a connection per record by itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import orjson
from common import cpu_seconds

# The run's figures on one line of wrk's output, for this module to parse.
MARKER = "WRK-RESULT "

SCRIPT = """\
local req = "{request}"
request = function() return req end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{marker}{{"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class WrkRun:
    """One wrk run against one server: rate, closed-loop latency, and both sides' CPU seconds."""

    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    server_cpu: float
    wrk_cpu: float

    def server_us(self) -> float:
        """Server CPU µs per request."""
        return self.server_cpu / max(1, self.requests) * 1e6

    def wrk_us(self) -> float:
        """wrk's CPU µs per request."""
        return self.wrk_cpu / max(1, self.requests) * 1e6


def lua_string(data: bytes) -> str:
    """``data`` as the inside of a Lua string literal: every byte that is not a letter or digit
    as a three-digit decimal escape (a long bracket string would turn CRLF into LF)."""
    return "".join(chr(b) if chr(b).isalnum() else f"\\{b:03d}" for b in data)


def write_script(path: Path, request: bytes) -> Path:
    """A wrk script at ``path`` sending ``request`` on every connection."""
    path.write_text(SCRIPT.format(request=lua_string(request), marker=MARKER))
    return path


def run_wrk(port: int, server_pids: list[int], script: Path, seconds: int, connections: int,
            threads: int) -> WrkRun:
    """wrk for ``seconds`` against ``port`` with ``connections`` closed-loop connections; the
    servers' CPU from /proc over the run, wrk's from its own rusage."""
    before = cpu_seconds(*server_pids)
    proc = subprocess.Popen(
        [shutil.which("wrk") or "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
         "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}/app"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    server_cpu = cpu_seconds(*server_pids) - before
    lines = [line for line in output.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {output.strip()}")
    result = orjson.loads(lines[-1][len(MARKER):])
    return WrkRun(rate=result["requests"] / (result["duration_us"] / 1e6), p50_ms=result["p50_us"] / 1000,
                  p99_ms=result["p99_us"] / 1000, errors=result["errors"], requests=result["requests"],
                  server_cpu=server_cpu, wrk_cpu=usage.ru_utime + usage.ru_stime)
