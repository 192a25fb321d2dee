"""APScheduler 3 wiring of the uploader's jobs: one BackgroundScheduler in the sink.

Every job has max_instances=1 and coalesce, so a slow grid never stacks runs; a missed run
within the grace time still happens once. Upload runs every interval and at once when a
segment is sealed; publish runs every ``publish_delay`` and writes only when something changed,
so a batch of uploads is published once. Jobs never call the scheduler: its shutdown holds a
lock while it waits for running jobs.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Callable

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from archiver.common.redaction import redact
from archiver.ship.leases import LeaseRenewer
from archiver.ship.readback import RUN_INTERVAL, ReadBack
from archiver.ship.uploader import Uploader

log = logging.getLogger(__name__)
# The uploader's methods the jobs run, by the job name their runs and errors are counted under.
JOB_NAMES = {"upload_due": "upload", "publish": "publish", "verify_due": "verify", "prune_due": "prune",
             "freeze_due": "freeze"}
FREEZE_INTERVAL = 600.0  # closed periods are frozen within this of freeze_after
LEASE_JOB = "lease_renewal"
READ_BACK_JOB = "read_back"
# Keys of a run's result that count segments the run could not handle (the run itself went on).
SEGMENT_FAILURES = ("failed", "unhealthy", "missing")


class Jobs:
    """Upload, publish, verify, prune, freeze closed directories, renew leases and read back a
    part of the archive on a schedule."""

    def __init__(
        self,
        uploader: Uploader,
        *,
        upload_interval: float,
        publish_delay: float,
        verify_interval: float,
        prune_interval: float,
        leases: LeaseRenewer | None = None,
        read_back: ReadBack | None = None,
    ) -> None:
        self.uploader = uploader
        self.leases = leases
        self._uploading = threading.Event()
        self._counts_lock = threading.Lock()  # runs happen on the scheduler's threads
        self._runs: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._segment_failures: Counter[str] = Counter()
        self.scheduler = BackgroundScheduler(
            # Upload and publish keep threads of their own: a long verify, read-back or lease
            # pass must never hold every thread while segments wait to be uploaded.
            executors={"default": ThreadPoolExecutor(2), "background": ThreadPoolExecutor(2)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
            timezone=timezone.utc,
        )
        now = datetime.now(timezone.utc)
        self.scheduler.add_job(self._upload, "interval", seconds=upload_interval, id="upload", next_run_time=now)
        self.scheduler.add_job(self._publish, "interval", seconds=publish_delay, id="publish")
        self.scheduler.add_job(self._run, "interval", seconds=verify_interval, id="verify", args=["verify_due"],
                               executor="background")
        self.scheduler.add_job(self._run, "interval", seconds=prune_interval, id="prune", args=["prune_due"],
                               executor="background")
        self.scheduler.add_job(self._run, "interval", seconds=FREEZE_INTERVAL, id="freeze", args=["freeze_due"],
                               executor="background")
        if leases is not None:
            self.scheduler.add_job(self._counted, "interval", seconds=leases.settings.run_interval, id="leases",
                                   executor="background",
                                   args=[LEASE_JOB, "lease renewal", leases.renew_due])
        if read_back is not None:
            self.scheduler.add_job(self._counted, "interval", seconds=RUN_INTERVAL, id="read_back",
                                   executor="background",
                                   args=[READ_BACK_JOB, "read back", read_back.run_due])

    def start(self) -> None:
        self.scheduler.start()

    def shutdown(self) -> None:
        """Let running jobs finish their current segment, then publish what was not yet published."""
        self.uploader.stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.uploader.unpublished:
            self._run("publish")

    def wake_upload(self) -> None:
        """Run the upload job now (a segment was just sealed), unless it is running: a running
        job goes round again while it finds work. Thread-safe."""
        if self.scheduler.running and not self._uploading.is_set():
            self.scheduler.modify_job("upload", next_run_time=datetime.now(timezone.utc))

    def _upload(self) -> None:
        self._uploading.set()
        try:
            while not self.uploader.stopping.is_set():
                result = self._run("upload_due")
                if not result or not result["uploaded"]:
                    break
        finally:
            self._uploading.clear()

    def _publish(self) -> None:
        if self.uploader.unpublished:
            self._run("publish")

    def counts(self) -> dict[str, dict[str, int]]:
        """Per job: runs, runs that failed, and segments a run could not upload or verify.
        For metrics; safe from any thread."""
        with self._counts_lock:
            return {"runs": dict(self._runs), "errors": dict(self._errors),
                    "segment_failures": dict(self._segment_failures)}

    def _run(self, name: str) -> Any:
        return self._counted(JOB_NAMES[name], name, getattr(self.uploader, name))

    def _counted(self, job: str, name: str, call: Callable[[], Any]) -> Any:
        """Run one job, counting its run and its failure; a job must never kill the scheduler."""
        failed = False
        try:
            result = call()
        except Exception as err:  # noqa: BLE001 - reported in status and the log, run again later
            self.uploader.last_error = redact(f"{name}: {type(err).__name__}: {err}")
            log.warning("%s failed: %s", name, self.uploader.last_error)
            result, failed = None, True
        with self._counts_lock:
            self._runs[job] += 1
            self._errors[job] += failed
            if result:
                self._segment_failures[job] += sum(result.get(key, 0) for key in SEGMENT_FAILURES)
        return result
