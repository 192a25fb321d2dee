"""One worker's figures as JSON, and the whole sink's as their sum. Pure: the primary asks each
worker for its figures (archiver/app/group.py) and sums them with its own, so /_status and
/_metrics report the whole sink whichever worker a client reaches."""

from __future__ import annotations

from collections import Counter
from typing import Any

from prometheus_client.core import Metric

from archiver.ingest.counters import IngestCounters

_PAIRS = ("records", "bytes", "rejected", "dropped")
# Writer figures that add up over workers; the rest are the same in every worker (limits, policy).
_SUMMED = ("spool_bytes", "spool_limit", "sealing", "fsync_rounds", "commits_waited", "segments_sealed", "seal_errors")


def counters_json(counters: IngestCounters) -> dict[str, Any]:
    document: dict[str, Any] = {name: [[*key, n] for key, n in getattr(counters, name).items()] for name in _PAIRS}
    document["responses"] = [[code, n] for code, n in counters.responses.items()]
    return document


def counters_from_json(documents: list[dict[str, Any]]) -> IngestCounters:
    """The sum of several workers' counters."""
    total = IngestCounters()
    for document in documents:
        for name in _PAIRS:
            for first, second, n in document[name]:
                getattr(total, name)[first, second] += n
        for code, n in document["responses"]:
            total.responses[code] += n
    return total


def histogram_samples(families: list[Metric]) -> list[list[Any]]:
    """The samples of histograms as JSON: [name, labels, value]."""
    return [[sample.name, sample.labels, sample.value] for family in families for sample in family.samples]


def merge_histograms(own: list[Metric], others: list[list[list[Any]]]) -> list[Metric]:
    """``own`` histograms with the samples of other workers added (``_created``: the earliest)."""
    added: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    created: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for samples in others:
        for name, labels, value in samples:
            key = (name, tuple(sorted(labels.items())))
            if name.endswith("_created"):
                created[key] = min(value, created.get(key, value))
            else:
                added[key] += value
    merged = []
    for family in own:
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            value = min(sample.value, created.get(key, sample.value)) if sample.name.endswith("_created") \
                else sample.value + added[key]
            copy.add_sample(sample.name, sample.labels, value)
        merged.append(copy)
    return merged


def merge_writers(statuses: list[dict[str, Any]]) -> dict[str, Any]:
    """The spool of every worker as one writer's status: figures summed, each stream's open
    segments summed into one entry (its oldest segment named, how many in ``segments``),
    seal failures listed."""
    total = {**statuses[0], **{name: sum(status[name] for status in statuses) for name in _SUMMED}}
    open_streams: dict[str, dict[str, Any]] = {}
    for status in statuses:
        for stream, segment in status["open"].items():
            known = open_streams.get(stream)
            if known is None:
                open_streams[stream] = {**segment, "segments": 1}
                continue
            known["segments"] += 1
            known["bytes"] += segment["bytes"]
            known["records"] += segment["records"]
            if segment["age_s"] > known["age_s"]:
                known.update(segment=segment["segment"], age_s=segment["age_s"])
    total["open"] = dict(sorted(open_streams.items()))
    total["seal_failed"] = [failed for status in statuses for failed in status["seal_failed"]]
    total["spool_error"] = next((status["spool_error"] for status in statuses if status["spool_error"]), None)
    return total
