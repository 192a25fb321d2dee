"""The jobs that move sealed segments to the store: upload, publish, verify, prune.

Knows only the Store protocol and the manifest. Ordering (docs/format.md): a segment is uploaded,
then the manifest row says so, then it is verified, and only then, after ``keep_local``, is the
local copy removed. Store paths are fixed by the segment id, and Tahoe's CHK caps are derived
from the content, so uploading a segment again after a crash (between the PUT and the
manifest update) writes the same file under the same name: never a second entry."""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from dataclasses import dataclass
from posixpath import dirname
from typing import Any, BinaryIO, Callable

import orjson

from archiver.common.backoff import retry_delay
from archiver.common.failpoints import failpoint
from archiver.common.redaction import redact
from archiver.common.units import format_ts
from archiver.format.layout import DataDir
from archiver.format.manifest import Manifest, SegmentRow
from archiver.format.store_layout import index_path, levels_of, store_path
from archiver.ship.dirs import KnownDirs
from archiver.ship.forget import unlink_index
from archiver.ship.freezer import Freezer
from archiver.ship.publisher import Publisher
from archiver.store.base import Frozen, HealthCheck, NotFound, Store, StoreError, StoreUnavailable, Stored, caps_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadSettings:
    interval: float = 30.0
    backoff_base: float = 5.0
    backoff_max: float = 600.0
    keep_local: float = 7 * 86400.0
    shares_happy: int = 1
    repair: bool = False
    freeze: bool = True
    freeze_after: float = 3600.0


class Uploader:
    """Runs on scheduler threads; each run opens its own manifest connection."""

    def __init__(
        self,
        data_dir: DataDir,
        sink_id: str,
        open_store: Callable[[], Store],
        settings: UploadSettings,
        on_pruned: Callable[[str, int], None] = lambda segment, size: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = data_dir
        self.sink_id = sink_id
        self.settings = settings
        self._open_store = open_store
        self._store: Store | None = None
        self._on_pruned = on_pruned
        self._clock = clock
        self._rng = random.Random()
        self._upload_lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._store_lock = threading.Lock()
        self._dirs = KnownDirs()
        self._freezer = Freezer(data_dir, self._dirs, settings.freeze_after, self._upload_lock, clock)
        self._publisher = Publisher(sink_id, clock)
        self._unpublished = 0  # changes not yet in the published manifest; under _count_lock
        self._count_lock = threading.Lock()
        self.last_error: str | None = None
        self.stopping = threading.Event()  # set at shutdown: runs end after the current segment

    def store(self) -> Store:
        """The store, opened (and its root created) on first use, so a grid that is down at
        start only delays uploads."""
        with self._store_lock:  # the upload job and the start-up may both ask first
            if self._store is None:
                self._store = self._open_store()
            return self._store

    @property
    def unpublished(self) -> int:
        """Manifest changes (uploads, verifications) not yet published."""
        return self._unpublished

    def _count_unpublished(self, changes: int) -> None:
        """The upload, verify and publish threads all change the count: a lost update could
        skip the final publish at shutdown."""
        with self._count_lock:
            self._unpublished += changes

    @property
    def opened(self) -> Store | None:
        """The store if it has been opened, without trying to open it."""
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    # -- upload ----------------------------------------------------------------------------

    def upload_due(self, force: bool = False) -> dict[str, int]:
        """Upload every sealed segment whose retry time has come (all of them with ``force``)."""
        uploaded = failed = 0
        with self._upload_lock:
            manifest = Manifest(self.data_dir.root)
            try:
                now = self._clock()
                for row in manifest.in_state("sealed", None if force else now):
                    if self.stopping.is_set():
                        break
                    try:
                        self._upload_one(manifest, row)
                        uploaded += 1
                    except StoreUnavailable as err:
                        failed += 1
                        self._failed(manifest, row, err, cap=self.settings.interval)
                        break  # the store is down: the next run tries again
                    except (StoreError, OSError) as err:
                        failed += 1
                        self._failed(manifest, row, err, cap=self.settings.backoff_max)
                backlog = len(manifest.in_state("sealed"))
            finally:
                manifest.close()
        self._count_unpublished(uploaded)
        return {"uploaded": uploaded, "failed": failed, "backlog": backlog}

    def _upload_one(self, manifest: Manifest, row: SegmentRow) -> None:
        path = store_path(row)
        with open(self.data_dir.root / row.local_path, "rb") as local:  # a segment forgotten since is gone
            self._upload_index(manifest, row)
            caps = self._put(manifest, path, local)
        failpoint("after-upload-put")
        if not manifest.update_segment(
            row.id, state="uploaded", store_path=path, read_cap=caps.read_cap, verify_cap=caps.verify_cap,
            uploaded_at=format_ts(self._clock()), last_error=None, next_attempt=0,
        ):
            self._unlink_forgotten(row, path)
            return
        log.info("uploaded %s (%d bytes)", path, row.stored_bytes)

    def _upload_index(self, manifest: Manifest, row: SegmentRow) -> None:
        """The segment's search index goes first: a reader that finds a segment in the
        published manifest finds its index too (a segment sealed before indexes has none)."""
        local = self.data_dir.index_path(row.stream, row.id)
        path = index_path(row)
        if path is None or not local.is_file():
            return
        self._ensure_dirs(manifest, dirname(path))
        with open(local, "rb") as data:
            self.store().put(path, data, self._dirs.get(dirname(path)))

    def _unlink_forgotten(self, row: SegmentRow, path: str) -> None:
        """``archiver forget`` dropped the segment while it was being uploaded, and may have
        looked for it in the store before the PUT: unlink what the PUT wrote."""
        unlink_index(self.store(), row)
        try:
            self.store().delete(path)
        except NotFound:
            pass  # forget unlinked it after the PUT
        log.info("%s was forgotten while it was uploaded: unlinked it again", row.id)

    def _put(self, manifest: Manifest, path: str, local: BinaryIO) -> Stored:
        """Upload into the file's directory, by its cap when known. When that directory is gone,
        or its cap is one the store cannot read (store.url now names another root or grid), its
        directories are forgotten, made again by path, and the upload tried once more. A frozen
        directory (a late segment for a closed period) is thawed first: when this sink froze it,
        before the upload, as is a frozen day directory of the older layout that the segment's
        hour directory is made in; when the store finds it frozen (a rebuilt manifest, which
        holds no write cap for it), after that upload fails. A directory another sink on the
        same root froze while this one still writes into it by its old cap is not seen here:
        the file goes into the replaced directory, and verify re-uploads it (docs/format.md)."""
        directory = dirname(path)
        levels = levels_of(directory)
        missing = self._dirs.missing(manifest, self.store(), levels)
        for level in levels:
            if self._dirs.frozen(level) and (level == directory or any(m.startswith(level + "/") for m in missing)):
                self._freezer.thaw(self.store(), manifest, level)
        self._ensure_dirs(manifest, directory)
        try:
            return self.store().put(path, local, self._dirs.get(directory))
        except NotFound:
            self._dirs.forget(manifest, levels_of(directory))
            self._ensure_dirs(manifest, directory)
        except Frozen:
            self._freezer.thaw(self.store(), manifest, directory)
        local.seek(0)
        return self.store().put(path, local, self._dirs.get(directory))

    def _ensure_dirs(self, manifest: Manifest, path: str) -> None:
        """Create each directory of ``path`` not known to exist and record its caps."""
        store = self.store()
        missing = self._dirs.missing(manifest, store, levels_of(path))
        if missing:
            store.makedirs(missing[-1])  # one request makes every missing level
        for current in missing:
            self._dirs.add(manifest, current, caps_of(store, current), format_ts(self._clock()))

    def _failed(self, manifest: Manifest, row: SegmentRow, err: Exception, cap: float) -> None:
        attempts = row.attempts + 1
        message = redact(f"{type(err).__name__}: {err}")
        delay = retry_delay(attempts, self.settings.backoff_base, min(cap, self.settings.backoff_max), self._rng)
        manifest.update_segment(row.id, attempts=attempts, last_error=message, next_attempt=self._clock() + delay)
        self.last_error = f"{row.id}: {message}"
        log.warning("upload of %s failed (attempt %d, next in %.0f s): %s", row.id, attempts, delay, message)

    # -- freeze ----------------------------------------------------------------------------

    def freeze_due(self) -> dict[str, int]:
        """Freeze the directories of closed periods (archiver/ship/freezer.py); the new caps
        are published by the next publish."""
        if not self.settings.freeze:
            return {"frozen": 0, "failed": 0}
        manifest = Manifest(self.data_dir.root)
        try:
            result = self._freezer.freeze_due(self.store(), manifest, self.stopping)
        finally:
            manifest.close()
        if self._freezer.last_error:
            self.last_error, self._freezer.last_error = self._freezer.last_error, None
        self._count_unpublished(result["frozen"])
        return result

    # -- publish ---------------------------------------------------------------------------

    def publish(self) -> None:
        """Publish what is new in the manifest (format 2: archiver/ship/publisher.py): READ
        caps only, O(new segments) a publish."""
        with self._publish_lock:
            manifest = Manifest(self.data_dir.root)
            try:
                pending = self.unpublished
                result = self._publisher.publish(self.store(), manifest, lambda path: self._ensure_dirs(manifest, path))
                self._count_unpublished(-pending)
            finally:
                manifest.close()
        log.info("published the manifest: %d segment(s) in the open period, %d period(s) closed",
                 result["open_entries"], result["closed"])

    # -- verify ----------------------------------------------------------------------------

    def verify_due(self, repair: bool | None = None) -> dict[str, int]:
        """Check every uploaded, not yet verified segment in the store."""
        healthy = unhealthy = missing = 0
        manifest = Manifest(self.data_dir.root)
        try:
            for row in manifest.in_state("uploaded"):
                if self.stopping.is_set():
                    break
                try:
                    ok, health = self.check(row, self.settings.repair if repair is None else repair)
                except NotFound:
                    missing += 1
                    self._missing_from_store(manifest, row)
                    continue
                except (StoreError, OSError) as err:
                    ok, health = False, {"error": redact(str(err))}
                changes: dict[str, Any] = {"health": orjson.dumps(health).decode()}
                if ok:
                    healthy += 1
                    changes.update(state="verified", verified_at=format_ts(self._clock()))
                else:
                    unhealthy += 1
                    changes["last_error"] = f"unhealthy: {health}"
                manifest.update_segment(row.id, **changes)
        finally:
            manifest.close()
        if healthy:
            self._count_unpublished(healthy)
        return {"verified": healthy, "unhealthy": unhealthy, "missing": missing}

    def _missing_from_store(self, manifest: Manifest, row: SegmentRow) -> None:
        """An uploaded segment not at its path: its directory was removed from the tree after
        the upload (or, on Tahoe, before it: uploads go into a directory by its cap), and is
        made again by the next upload into it.

        With its local copy, the segment goes back to sealed. It loses its store path, which
        readers and the published manifest take to mean "in the store", but keeps its caps
        until the new upload writes its own: a CHK cap names the bytes, not the path, and on
        Tahoe may still read a file unlinked from the tree. Without a local copy (a row rebuilt
        from the store has none; a lost copy neither) there is nothing to upload: the row stays
        uploaded with its caps, reported on each verify until the file is back at its path."""
        path = row.store_path or store_path(row)
        self._dirs.forget(manifest, levels_of(dirname(path)))
        if not (self.data_dir.root / row.local_path).is_file():  # '' names the data dir itself
            message = f"missing from the store at {path}, and no local copy to upload again"
            log.error("%s is %s", row.id, message)
            manifest.update_segment(row.id, last_error=message)
            self.last_error = f"{row.id}: {message}"
            return
        log.warning("%s is not at %s in the store (a directory removed?): uploading it again", row.id, path)
        manifest.update_segment(
            row.id, state="sealed", store_path=None, uploaded_at=None, published_seq=None,
            next_attempt=0, last_error=f"not found at {path} when verified: uploading again",
        )

    def check(self, row: SegmentRow, repair: bool = False) -> tuple[bool, dict[str, Any]]:
        """Stores with a health check: theirs (Tahoe's ``t=check&verify=true``), healthy only
        when count-happiness reaches shares_happy. Other stores: the stored bytes hash to the
        manifest's sha256."""
        store = self.store()
        path = row.store_path or store_path(row)
        if isinstance(store, HealthCheck):
            health = store.check(path, verify=True, repair=repair)
            return health.enough(self.settings.shares_happy), health.as_dict()
        digest = hashlib.sha256()
        with store.open(path) as stored:
            while chunk := stored.read(1024 * 1024):
                digest.update(chunk)
        return digest.hexdigest() == row.sha256, {"sha256_matches": digest.hexdigest() == row.sha256}

    # -- prune -----------------------------------------------------------------------------

    def prune_due(self) -> dict[str, int]:
        """Remove local sealed copies of verified segments older than ``keep_local``."""
        pruned = 0
        cutoff = format_ts(self._clock() - self.settings.keep_local)
        manifest = Manifest(self.data_dir.root)
        try:
            for row in manifest.in_state("verified"):
                if row.uploaded_at is None or row.uploaded_at > cutoff:
                    continue
                size = 0
                for local in (self.data_dir.root / row.local_path, self.data_dir.index_path(row.stream, row.id)):
                    size += local.stat().st_size if local.exists() else 0
                    local.unlink(missing_ok=True)
                manifest.update_segment(row.id, state="pruned", pruned_at=format_ts(self._clock()))
                self._on_pruned(row.id, size)
                pruned += 1
        finally:
            manifest.close()
        return {"pruned": pruned}
