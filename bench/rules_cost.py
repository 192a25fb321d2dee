"""What the ten ingest rules (common.TEN_RULES) cost, in process: the decode functions the sink
runs, with no rules and with the ten, on the TCP JSON-lines path (a batch of syslog-ng
``format-json`` lines, as bench/ingest_bulk.py sends, and one of python-logstash-async's) and on
the HTTPHandler path (one form record a request, as bench/ingest_http.py sends). No sockets, no
fsync: this isolates the decoding and the rules, so a change to the rules engine can be judged
in seconds; the end-to-end rows of ingest_bulk.py and ingest_http.py are what the target is
finally judged on. Best of --rounds, the variants taken in turn each round; prints µs a record
and the share of throughput the rules cost (target < 20%).
Run: .venv/bin/python bench/rules_cost.py [--records N] [--rounds N] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
import tomllib
from typing import Callable

import orjson
from common import TEN_RULES
from ingest_bulk import sample_lines
from ingest_http import httphandler_request

from archiver.format.record import Context
from archiver.ingest.decoder import decode_request, decode_tcp
from archiver.ingest.rules import NO_RULES, RuleSet, compile_rules


def logstash_lines(count: int) -> list[bytes]:
    """python-logstash-async's JSON, as its LogstashFormatter writes a record."""
    return [orjson.dumps({
        "@timestamp": "2026-11-23T21:01:24.123Z", "@version": "1", "host": "web01", "level": "INFO",
        "logsource": "web01", "message": f"order {n} paid in {n % 97} ms", "pid": 4021, "program": "shop.py",
        "type": "python-logstash", "tags": [], "logger_name": "shop.orders",
        "extra": {"func_name": "pay", "interpreter": "/usr/bin/python3", "interpreter_version": "3.11.2",
                  "line": 118, "logstash_async_version": "3.0.0", "path": "/srv/shop/orders.py",
                  "process_name": "MainProcess", "thread_name": "MainThread", "user": f"u{n % 13}"},
    }) for n in range(count)]


def form_body() -> bytes:
    return httphandler_request(8000).split(b"\r\n\r\n", 1)[1]


def paths(records: int) -> dict[str, tuple[int, Callable[[RuleSet], object]]]:
    """Each path: how many records one call decodes, and the call."""
    ctx = Context("tcp", "127.0.0.1", time.time())
    syslog_ng = b"\n".join(sample_lines(records)) + b"\n"
    logstash = b"\n".join(logstash_lines(records)) + b"\n"
    body = form_body()
    form_ctx = Context("app", "127.0.0.1", time.time())

    def forms(rules: RuleSet) -> None:
        for _ in range(records):
            decode_request("POST", body, None, 1 << 24, form_ctx, rules)

    return {
        "TCP syslog-ng JSON lines": (records, lambda rules: decode_tcp(syslog_ng, ctx, "", rules)),
        "TCP python-logstash lines": (records, lambda rules: decode_tcp(logstash, ctx, "", rules)),
        "HTTPHandler form, a record a call": (records, forms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=5000, help="records a timed call (default 5000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; the best is taken (default 7)")
    parser.add_argument("--profile", action="store_true", help="cProfile each path with the ten rules instead")
    args = parser.parse_args()
    ten = RuleSet(compile_rules(tomllib.loads(TEN_RULES)["rules"]))
    variants = {"no rules": NO_RULES, "10 rules": ten}
    table = paths(args.records)
    if args.profile:
        for name, (_, call) in table.items():
            print(f"\n== {name}, 10 rules")
            profile = cProfile.Profile()
            profile.runcall(call, ten)
            pstats.Stats(profile).sort_stats("tottime").print_stats(14)
        return
    best = {(path, variant): float("inf") for path in table for variant in variants}
    for _ in range(args.rounds):
        for path, (count, call) in table.items():
            for variant, rules in variants.items():
                start = time.perf_counter()
                call(rules)
                best[path, variant] = min(best[path, variant], (time.perf_counter() - start) / count * 1e6)
    print(f"in process, {args.records} records a call, best of {args.rounds} rounds; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for path in table:
        plain, ruled = best[path, "no rules"], best[path, "10 rules"]
        print(f"{path:36} no rules {plain:6.2f} µs/record, 10 rules {ruled:6.2f}: "
              f"rules cost {1 - plain / ruled:5.1%} of the throughput")


if __name__ == "__main__":
    main()
