"""A third backend with only what the Store protocol requires (no caps, no health check), on
plain files: the uploader and reader tests run against it to prove a backend needs nothing
outside archiver/store/."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import BinaryIO

from fs.memoryfs import MemoryFS
from fs.osfs import OSFS

from archiver.store import FsStore, Store
from archiver.store.base import Entry, NotFound, Stored


class MinimalStore(Store):
    """Files under one local directory, through pathlib only."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root

    def _local(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def url(self) -> str:
        return f"minimal://{self.root}"

    def put(self, path: str, file: BinaryIO, parent: str | None = None) -> Stored:
        target = self._local(path)
        if not target.parent.is_dir():
            raise NotFound(f"no directory for {path}")
        with open(target, "wb") as out:
            shutil.copyfileobj(file, out)
        return Stored()

    def open(self, path: str) -> BinaryIO:
        try:
            return open(self._local(path), "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(f"nothing at {path}") from None

    def stat(self, path: str) -> Entry:
        local = self._local(path)
        if not local.exists():
            raise NotFound(f"nothing at {path}")
        return Entry(local.name, local.is_dir(), 0 if local.is_dir() else local.stat().st_size)

    def listdir(self, path: str) -> list[str]:
        if not self._local(path).is_dir():
            raise NotFound(f"no directory at {path}")
        return sorted(child.name for child in self._local(path).iterdir())

    def exists(self, path: str) -> bool:
        return self._local(path).exists()

    def isdir(self, path: str) -> bool:
        return self._local(path).is_dir()

    def makedirs(self, path: str) -> None:
        self._local(path).mkdir(parents=True, exist_ok=True)

    def delete(self, path: str) -> None:
        local = self._local(path)
        if not local.exists():
            raise NotFound(f"nothing at {path}")
        shutil.rmtree(local) if local.is_dir() else local.unlink()

    def close(self) -> None:
        pass

    def root_identity(self) -> str:
        return hashlib.sha256(str(self.root).encode()).hexdigest()


BACKENDS = ["memory", "osfs", "minimal"]


def make_store(kind: str, directory: Path) -> Store:
    """A fresh store of ``kind`` (one of BACKENDS); the file-backed ones live in ``directory``."""
    if kind == "memory":
        return FsStore(MemoryFS())
    if kind == "osfs":
        return FsStore(OSFS(str(directory), create=True), f"osfs://{directory}")
    return MinimalStore(directory)
