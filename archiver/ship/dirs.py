"""The store directories a sink made, with their caps and which are frozen: the manifest's
dirs table, cached for the uploader's threads."""

from __future__ import annotations

import threading

from archiver.format.manifest import Manifest
from archiver.store.base import Store, Stored


class KnownDirs:
    """The store directories the uploader made, path -> write cap (None without caps), and
    which of them are frozen: the manifest's dirs table, cached. The upload, publish, verify
    and freeze threads share it under one lock, so a load from the manifest cannot bring back
    directories another thread forgot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._caps: dict[str, str | None] = {}
        self._frozen: set[str] = set()
        self._loaded = False

    def _load(self, manifest: Manifest, store: Store) -> None:
        if not self._loaded:
            dirs = manifest.dirs_under(store.root_identity())
            self._caps = {path: caps["write_cap"] for path, caps in dirs.items()}
            self._frozen = {path for path, caps in dirs.items() if caps["frozen_at"]}
            self._loaded = True

    def missing(self, manifest: Manifest, store: Store, levels: list[str]) -> list[str]:
        """Those of ``levels`` not known to exist. The first call loads the manifest's
        directories, less those recorded under another root than ``store``'s."""
        with self._lock:
            self._load(manifest, store)
            return [level for level in levels if level not in self._caps]

    def known(self, manifest: Manifest, store: Store) -> tuple[set[str], set[str]]:
        """Every known directory, and those of them that are frozen, read again from the
        manifest: ``archiver forget`` (another process) thaws directories to unlink from them."""
        with self._lock:
            self._loaded = False
            self._load(manifest, store)
            return set(self._caps), set(self._frozen)

    def get(self, path: str) -> str | None:
        with self._lock:
            return self._caps.get(path)

    def frozen(self, path: str) -> bool:
        with self._lock:
            return path in self._frozen

    def add(self, manifest: Manifest, path: str, caps: Stored, created_at: str) -> None:
        """A directory made, or thawed."""
        with self._lock:
            manifest.add_dir(path, caps.write_cap, caps.read_cap, created_at)
            self._caps[path] = caps.write_cap
            self._frozen.discard(path)

    def freeze(self, manifest: Manifest, path: str, caps: Stored, when: str) -> None:
        with self._lock:
            manifest.dir_frozen(path, caps.read_cap, when)
            self._caps[path] = None
            self._frozen.add(path)

    def forget(self, manifest: Manifest, paths: list[str]) -> None:
        """Directories found gone from the store (or their caps unusable): made again when next needed."""
        with self._lock:
            manifest.forget_dirs(paths)
            for path in paths:
                self._caps.pop(path, None)
                self._frozen.discard(path)
