"""What the sources count, shared by the HTTP and TCP sources of one sink.

Plain counters, touched on the event loop only, so ``/_status`` can sum both sources and the
app's metrics can read them at scrape time without ingest knowing about Prometheus. Labels are
bounded: sources and reasons are the fixed names below, streams are valid stream names (each is
a directory in the spool anyway).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

HTTP = "http"
TCP = "tcp"
SOURCES = (HTTP, TCP)

# Why input went to _rejected or was refused: a closed set, never the free-text reason.
REJECT_REASONS = (
    "record",           # one element of a batch or one TCP line was not a record
    "bad_stream",       # the URL names no valid stream
    "too_large",        # a body over server.max_body_bytes, or decoding to more than max_decoded_bytes
    "undecodable",      # a body the decoders refuse
    "incomplete",       # a body cut short, a TCP line unfinished at stop
    "line_too_long",    # a TCP line over tcp.max_line_bytes
    "decoder_failed",   # a decoding bug: the raw bytes are kept
    "misrouted",        # a request for another route pipelined behind ingest requests (the hot path)
    "spool_full",       # refused with 503 before reading: nothing kept, the sender retries
)


def _ignore(seconds: float) -> None:
    """No observer wired: tests and tools that run a source without metrics."""


@dataclass
class IngestCounters:
    """Counters by source and stream, rejects by source and reason, records dropped by source
    and rule (labels bounded by the configuration), HTTP answers by code; and
    ``observe_ack``, called with the seconds from a request's arrival to its answer after a
    durable append (the app wires it to a histogram)."""

    records: Counter[tuple[str, str]] = field(default_factory=Counter)
    bytes: Counter[tuple[str, str]] = field(default_factory=Counter)
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    responses: Counter[int] = field(default_factory=Counter)
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)
    observe_ack: Callable[[float], None] = _ignore

    def received(self, source: str, stream: str, records: int, size: int) -> None:
        """``records`` made durable in ``stream``; ``size`` bytes of input decoded for it (TCP
        counts a read's bytes under the listener's stream, its records under theirs)."""
        if records:
            self.records[source, stream] += records
        if size:
            self.bytes[source, stream] += size

    def reject(self, source: str, reason: str, count: int = 1) -> None:
        if reason not in REJECT_REASONS:
            raise ValueError(f"unknown reject reason {reason!r}")
        if count:
            self.rejected[source, reason] += count

    def drop(self, source: str, by_rule: dict[str, int]) -> None:
        """Records the rules dropped, by rule label."""
        for rule, count in by_rule.items():
            self.dropped[source, rule] += count

    def snapshot(self) -> "IngestCounters":
        """A copy to read off the event loop."""
        return IngestCounters(Counter(self.records), Counter(self.bytes), Counter(self.rejected),
                              Counter(self.responses), Counter(self.dropped))

    def status(self) -> dict[str, Any]:
        """The /_status figures: records per stream (every source), by source, rejects."""
        by_stream: Counter[str] = Counter()
        by_source: dict[str, dict[str, int]] = {source: {} for source in SOURCES}
        for (source, stream), count in sorted(self.records.items()):
            by_stream[stream] += count
            by_source[source][stream] = count
        dropped: Counter[str] = Counter()
        for (_, rule), count in self.dropped.items():
            dropped[rule] += count
        reasons: Counter[str] = Counter()
        for (_, reason), count in self.rejected.items():
            reasons[reason] += count
        return {
            "records": dict(by_stream),
            "records_by_source": by_source,
            "rejected": sum(reasons.values()) - reasons["spool_full"],  # what went to _rejected
            "rejected_by_reason": dict(sorted(reasons.items())),
            "dropped_by_rule": dict(sorted(dropped.items())),
            "responses": {str(code): count for code, count in sorted(self.responses.items())},
        }
