"""Reading the archive back over time: one part a day, so all of it is read once a period.

Verification after upload checks a segment once; shares can rot or go missing later. Reading
everything back at once costs a download of the whole archive, so each day the sink reads part
``day % days + 1`` of ``days`` (restic's ``--read-data-subset``, parts by segment id): every
stored segment is downloaded, hashed and (on Tahoe) verified share by share once every
``days`` days, at about 1/days of the archive a day. The manifest remembers the day that was
read, so a restart does not read it again. Problems are logged and reported to ``on_problem``
(the uploader's last_error, which status shows); nothing in the manifest's rows changes.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import orjson

from archiver.common.units import format_ts
from archiver.format.layout import DataDir
from archiver.format.manifest import Manifest
from archiver.format.subset import Subset
from archiver.store.base import Store
from archiver.store.integrity import check_stored

log = logging.getLogger(__name__)
DAY = 86400
RUN_INTERVAL = 3600.0  # a run finds today's part done in one manifest read
LAST_RUN = "read_back"  # manifest meta: the last finished day's part and what it found


def todays_part(now: float, days: int) -> Subset:
    """The part of ``days`` read on the UTC day of ``now``: consecutive days cycle through all."""
    return Subset(int(now // DAY) % days + 1, days)


class ReadBack:
    """Runs on a scheduler thread; ``days`` > 0."""

    def __init__(
        self,
        data_dir: DataDir,
        store: Callable[[], Store],
        days: int,
        *,
        shares_happy: int = 1,
        on_problem: Callable[[str], None] = lambda message: None,
        clock: Callable[[], float] = time.time,
        stopping: threading.Event | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.days = days
        self.shares_happy = shares_happy
        self._store = store
        self._on_problem = on_problem
        self._clock = clock
        self._stopping = stopping or threading.Event()

    def run_due(self) -> dict[str, int]:
        """Read back today's part, unless it was read already; a run cut short by a stop is
        done again after the restart."""
        now = self._clock()
        day = format_ts(now)[:10]
        part = todays_part(now, self.days)
        manifest = Manifest(self.data_dir.root)
        try:
            if orjson.loads(manifest.get_meta(LAST_RUN) or "{}").get("day") == day:
                return {"checked": 0, "failed": 0}
            stored = [row for row in manifest.segments() if row.store_path is not None]
            chosen = part.choose([row.id for row in stored])
            checked = failed = 0
            for row in stored:
                if row.id not in chosen:
                    continue
                if self._stopping.is_set():
                    return {"checked": checked, "failed": failed}
                assert row.store_path is not None
                problem = check_stored(
                    self._store(), row.store_path, sha256=row.sha256, size=row.stored_bytes, read=True,
                    shares_happy=self.shares_happy,
                )
                checked += 1
                if problem is not None:
                    failed += 1
                    message = f"read back of {row.id}: {problem}"
                    log.error("%s", message)
                    self._on_problem(message)
            last: dict[str, Any] = {"day": day, "part": str(part), "checked": checked, "failed": failed}
            manifest.set_meta(LAST_RUN, orjson.dumps(last).decode())
        finally:
            manifest.close()
        log.info("read back part %s: %d segment(s), %d problem(s)", part, checked, failed)
        return {"checked": checked, "failed": failed}
