"""APScheduler 3 wiring of the uploader's jobs: one BackgroundScheduler in the sink.

Every job has max_instances=1 and coalesce, so a slow grid never stacks runs; a missed run
within the grace time still happens once. Upload runs every interval and at once when a
segment is sealed; publishing is debounced: the first upload of a batch schedules one publish
``publish_delay`` later.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from .store import redact
from .uploader import Uploader

log = logging.getLogger(__name__)


class Jobs:
    """Upload, publish, verify and prune on a schedule."""

    def __init__(
        self,
        uploader: Uploader,
        *,
        upload_interval: float,
        publish_delay: float,
        verify_interval: float,
        prune_interval: float,
    ) -> None:
        self.uploader = uploader
        self.publish_delay = publish_delay
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(3)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
            timezone=timezone.utc,
        )
        now = datetime.now(timezone.utc)
        self.scheduler.add_job(self._upload, "interval", seconds=upload_interval, id="upload", next_run_time=now)
        self.scheduler.add_job(self._run, "interval", seconds=verify_interval, id="verify", args=["verify_due"])
        self.scheduler.add_job(self._run, "interval", seconds=prune_interval, id="prune", args=["prune_due"])

    def start(self) -> None:
        self.scheduler.start()

    def shutdown(self) -> None:
        """Wait for running jobs, then publish what was not yet published."""
        self.scheduler.shutdown(wait=True)
        if self.uploader.unpublished:
            self._run("publish")

    def wake_upload(self) -> None:
        """Run the upload job now (a segment was just sealed). Thread-safe."""
        if self.scheduler.running:
            self.scheduler.modify_job("upload", next_run_time=datetime.now(timezone.utc))

    def _upload(self) -> None:
        result = self._run("upload_due")
        if result and (result["uploaded"] or self.uploader.unpublished):
            self.schedule_publish()

    def schedule_publish(self) -> None:
        if self.scheduler.get_job("publish") is None:
            when = datetime.now(timezone.utc) + timedelta(seconds=self.publish_delay)
            self.scheduler.add_job(self._run, "date", run_date=when, id="publish", args=["publish"])

    def _run(self, name: str) -> Any:
        try:
            return getattr(self.uploader, name)()
        except Exception as err:  # noqa: BLE001 - a job must never kill the scheduler
            self.uploader.last_error = redact(f"{name}: {type(err).__name__}: {err}")
            log.warning("%s failed: %s", name, self.uploader.last_error)
            return None
