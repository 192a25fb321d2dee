"""The sink's Prometheus metrics: every definition is here, in one registry per sink.

The registry is the sink's own, never prometheus_client's global default, so tests and several
sinks in one process do not share figures. Two histograms are observed as things happen (ack
latency per HTTP request, duration of each group-commit fsync round): ingest and spool call the
plain callbacks they expose, wired here. Everything else is read at scrape time by one
collector: counters and state of the sources, writer, decoder and jobs (taken on the event loop,
where they live), then the manifest (read-only) and the store, on a worker thread.
docs/operations.md ("Watching it") lists every metric.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from archiver import __version__
from archiver.common.redaction import redact
from archiver.app.figures import counters_from_json, counters_json, histogram_samples, merge_histograms, merge_writers
from archiver.common.units import ts_epoch
from archiver.format.layout import DataDir, segment_start
from archiver.format.manifest import STATES, Manifest, open_for_reading
from archiver.ingest.counters import REJECT_REASONS, SOURCES, IngestCounters
from archiver.ingest.decoder import Decoder
from archiver.ship.scheduler import Jobs
from archiver.ship.uploader import Uploader
from archiver.spool.writer import SegmentWriter
from archiver.store import GridStatus

log = logging.getLogger(__name__)
# Every job counted by archiver_job_runs_total; lease renewal and read back are declared ahead of their jobs.
JOBS = ("seal", "upload", "publish", "verify", "prune", "freeze", "lease_renewal", "read_back")
# An ack waits for one shared fsync: fractions of a millisecond on fast disks, seconds on a sick one.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def local_only_since(data: DataDir, manifest: Manifest) -> float | None:
    """The earliest time at which a record now held on this host only may have been
    acknowledged; None when every acknowledged record is in the store.

    Such records are in segments that are open, being sealed, or sealed and not uploaded. The
    time taken is each segment's open time (from its id, rounded down to the second), which no
    record in it precedes: an upper bound on the window, never an underestimate. The open
    spool is listed before the manifest is read: a segment is entered there as sealed before
    its open file goes, so none slips between the two."""
    ids = [segment for _, segment, _ in data.open_segments()]
    ids += [row.id for row in manifest.in_state("sealed")]
    return min((start for start in map(segment_start, ids) if start is not None), default=None)


def local_only_seconds(since: float | None, now: float) -> float:
    """``archiver_local_only_oldest_seconds``: 0 when nothing is held on this host only."""
    return 0.0 if since is None else max(0.0, now - since)


@dataclass(frozen=True)
class _LoopState:
    """What lives on the event loop, copied there for the collector's thread."""

    writer: dict[str, Any]
    counters: IngestCounters
    decode_workers: int
    decoder_restarts: int
    histograms: list[Metric]


class SinkMetrics:
    """The registry of one sink and the wiring of its histograms; ``scrape`` serves /_metrics.

    ``uploader`` and ``jobs`` are None for a sink without a store; ``shares_happy`` is
    exported so alerts can compare the grid's servers with it. ``others`` gives the other
    workers' figures (``figures``), summed with this process's at each scrape."""

    def __init__(
        self,
        data: DataDir,
        writer: SegmentWriter,
        counters: IngestCounters,
        decoder: Decoder,
        *,
        uploader: Uploader | None = None,
        jobs: Jobs | None = None,
        shares_happy: int = 1,
        clock: Callable[[], float] = time.time,
        others: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._histograms = CollectorRegistry(auto_describe=False)
        ack = Histogram("archiver_ack_latency_seconds",
                        "HTTP ingest requests: arrival to the answer sent after the durable append.",
                        buckets=LATENCY_BUCKETS, registry=self._histograms)
        fsync = Histogram("archiver_fsync_duration_seconds",
                          "Group-commit rounds: the fsync of every dirty segment and new directory entry.",
                          buckets=LATENCY_BUCKETS, registry=self._histograms)
        counters.observe_ack = ack.observe
        writer.stats.observe_fsync_round = fsync.observe
        self._writer = writer
        self._counters = counters
        self._decoder = decoder
        self._others = others
        self._collector = _SinkCollector(data, uploader, jobs, shares_happy, clock)
        self.registry.register(self._collector)

    def figures(self, worker: int) -> dict[str, Any]:
        """This process's figures as JSON, for the primary to sum (archiver/app/figures.py)."""
        return {
            "worker": worker, "pid": os.getpid(), "writer": self._writer.status(),
            "counters": counters_json(self._counters), "decode_workers": self._decoder.workers,
            "decoder_restarts": self._decoder.restarts, "histograms": histogram_samples(list(self._histograms.collect())),
        }

    async def scrape(self) -> tuple[bytes, str]:
        """The exposition text and its content type. The loop's state is copied first (and the
        other workers' figures added); the manifest and the store are read on a worker thread."""
        histograms = list(self._histograms.collect())
        if self._others is None:
            state = _LoopState(self._writer.status(), self._counters.snapshot(), self._decoder.workers,
                               self._decoder.restarts, histograms)
        else:
            every = [self.figures(0), *await self._others()]
            state = _LoopState(
                merge_writers([figures["writer"] for figures in every]),
                counters_from_json([figures["counters"] for figures in every]),
                sum(figures["decode_workers"] for figures in every),
                sum(figures["decoder_restarts"] for figures in every),
                merge_histograms(histograms, [figures["histograms"] for figures in every[1:]]),
            )
        self._collector.loop_state = state
        body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, self.registry)
        return body, CONTENT_TYPE_LATEST


class _SinkCollector(Collector):
    """Reads every figure but the histograms when scraped."""

    def __init__(
        self, data: DataDir, uploader: Uploader | None, jobs: Jobs | None, shares_happy: int,
        clock: Callable[[], float],
    ) -> None:
        self.data = data
        self.uploader = uploader
        self.jobs = jobs
        self.shares_happy = shares_happy
        self.clock = clock
        self.loop_state: _LoopState | None = None  # set by SinkMetrics.scrape before each scrape

    def collect(self) -> Iterator[Metric]:
        state = self.loop_state
        if state is None:
            return
        yield InfoMetricFamily("archiver_build", "The archiver version serving.", value={"version": __version__})
        yield from state.histograms
        yield from _ingest_metrics(state)
        yield from _spool_metrics(state.writer)
        yield from self._job_metrics(state.writer)
        yield from self._manifest_metrics(sum(entry.get("segments", 1) for entry in state.writer["open"].values()))
        yield from self._store_metrics()

    def _job_metrics(self, writer: dict[str, Any]) -> Iterator[Metric]:
        counts = self.jobs.counts() if self.jobs else {"runs": {}, "errors": {}, "segment_failures": {}}
        counts["runs"]["seal"] = writer["segments_sealed"] + writer["seal_errors"]
        counts["errors"]["seal"] = writer["seal_errors"]
        yield _counter("archiver_job_runs", "Runs of each job (a seal is one segment).", ["job"],
                       {(job,): counts["runs"].get(job, 0) for job in JOBS})
        yield _counter("archiver_job_errors", "Runs of each job that failed.", ["job"],
                       {(job,): counts["errors"].get(job, 0) for job in JOBS})
        yield _counter("archiver_job_segment_failures", "Segments a run could not upload, or found unhealthy or "
                       "missing when verifying; the run went on.", ["job"],
                       {(job,): counts["segment_failures"].get(job, 0) for job in ("upload", "verify")})

    def _manifest_metrics(self, open_segments: int) -> Iterator[Metric]:
        manifest = open_for_reading(self.data.root)
        try:
            since = local_only_since(self.data, manifest)
            counts = manifest.counts()
            backlog = manifest.in_state("sealed")
            last_upload = manifest.last_event()["last_upload"]
        finally:
            manifest.close()
        now = self.clock()
        yield _gauge("archiver_segments", "Segments by state: open in the spool, then the manifest's.", ["state"],
                     {("open",): open_segments, **{(name,): counts[name] for name in STATES}})
        yield _gauge("archiver_backlog_bytes", "Bytes sealed and not yet uploaded.", [],
                     {(): sum(row.stored_bytes for row in backlog)})
        oldest = min((ts_epoch(row.sealed_at) for row in backlog), default=None)
        yield _gauge("archiver_backlog_oldest_seconds", "Since the oldest segment not yet uploaded was sealed; "
                     "0 without a backlog.", [], {(): 0.0 if oldest is None else max(0.0, now - oldest)})
        yield _gauge("archiver_local_only_oldest_seconds", "Age of the oldest acknowledged record held only on "
                     "this host (an upper bound: from its segment's open time); 0 when none is.", [],
                     {(): local_only_seconds(since, now)})
        if last_upload is not None:
            yield _gauge("archiver_last_upload_timestamp_seconds", "When a segment was last uploaded.", [],
                         {(): ts_epoch(last_upload)})

    def _store_metrics(self) -> Iterator[Metric]:
        if self.uploader is None:
            return
        yield _gauge("archiver_store_shares_happy", "store.shares_happy: servers a healthy segment needs.", [],
                     {(): self.shares_happy})
        store = self.uploader.opened
        if not isinstance(store, GridStatus):
            return
        try:
            connected = store.servers_connected()
        except Exception as err:  # noqa: BLE001 - a scrape reports what it can
            log.warning("metrics: servers connected unknown: %s", redact(str(err)))
            return
        if connected is not None:
            yield _gauge("archiver_store_servers_connected", "Storage servers the grid gateway reaches.", [],
                         {(): connected})


def _ingest_metrics(state: _LoopState) -> Iterator[Metric]:
    counters = state.counters
    yield _counter("archiver_records_received", "Records made durable, by source and stream.",
                   ["source", "stream"], counters.records)
    yield _counter("archiver_received_bytes", "Bytes of input decoded into records, by source and the stream "
                   "it was sent to.", ["source", "stream"], counters.bytes)
    yield _counter("archiver_rejected", "Input kept in _rejected, or refused (spool_full), by source and reason.",
                   ["source", "reason"],
                   {(source, reason): counters.rejected[source, reason] for source in SOURCES for reason in REJECT_REASONS})
    yield _counter("archiver_rule_dropped", "Records dropped by an ingest rule ([[rules]] drop), by source and rule.",
                   ["source", "rule"], counters.dropped)
    yield _counter("archiver_http_responses", "HTTP answers by status code.", ["code"],
                   {(str(code),): count for code, count in counters.responses.items()})
    yield _gauge("archiver_decode_workers", "Decode worker processes configured.", [], {(): state.decode_workers})
    yield _counter("archiver_decode_worker_restarts", "Decode workers that died and were replaced.", [],
                   {(): state.decoder_restarts})


def _spool_metrics(writer: dict[str, Any]) -> Iterator[Metric]:
    yield _gauge("archiver_spool_bytes", "Bytes in the spool: open and sealed segments.", [],
                 {(): writer["spool_bytes"]})
    yield _gauge("archiver_spool_limit_bytes", "spool.max_bytes: at it, input is refused with 503.", [],
                 {(): writer["spool_limit"]})
    yield _gauge("archiver_segments_seal_failed", "Segments whose seal failed, waiting to be tried again.", [],
                 {(): len(writer["seal_failed"])})
    yield _counter("archiver_fsync_rounds", "Group-commit rounds.", [], {(): writer["fsync_rounds"]})
    yield _counter("archiver_commits_waited", "Commits that waited for an fsync round.", [],
                   {(): writer["commits_waited"]})


def _counter(name: str, documentation: str, labels: list[str], values: Any) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def _gauge(name: str, documentation: str, labels: list[str], values: Any) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family
