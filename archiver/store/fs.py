"""FsStore: the Store protocol over any pyFilesystem2 filesystem (``osfs://``, ``mem://``, ...).

A plain filesystem has no capabilities and no health of its own: ``put`` returns empty
``Stored`` caps, and callers verify such a store by hashing what it gives back.
"""

from __future__ import annotations

import contextlib
from typing import BinaryIO, Iterator

from fs import errors
from fs.base import FS

from archiver.common.redaction import redact
from archiver.store.base import (
    AlreadyExists, Entry, Frozen, GuardedReader, NotFound, ReadOnly, Store, StoreError, StoreUnavailable, Stored,
    sha256_identity,
)


class FsStore(Store):
    """A Store over a pyFilesystem2 FS; it closes the FS when closed."""

    # pyFilesystem errors that mean the whole store is out of reach, not one path.
    UNAVAILABLE: tuple[type[Exception], ...] = (errors.RemoteConnectionError, errors.OperationTimeout)
    # Errors that mean a write went into a frozen directory (stores with ``Freezing``).
    FROZEN: tuple[type[Exception], ...] = ()

    def __init__(self, filesystem: FS, url: str | None = None) -> None:
        self.fs = filesystem
        self._url = url

    @property
    def url(self) -> str:
        return redact(self._url) if self._url else str(self.fs)

    @property
    def location(self) -> str | None:
        return self._url

    @contextlib.contextmanager
    def mapped(self, path: str) -> Iterator[None]:
        """Turn the filesystem's errors into StoreErrors, their messages redacted."""
        try:
            yield
        except self.FROZEN:
            raise Frozen(f"the directory of {path} is frozen") from None
        except errors.FSError as err:
            raise as_store_error(err, path, self.UNAVAILABLE) from None

    def put(self, path: str, file: BinaryIO, parent: str | None = None) -> Stored:
        with self.mapped(path):
            self.fs.upload(path, file)
        return self.caps_after_put(path)

    def caps_after_put(self, path: str) -> Stored:
        """The caps ``put`` returns: none on a plain filesystem."""
        return Stored()

    def open(self, path: str) -> BinaryIO:
        with self.mapped(path):
            raw = self.fs.openbin(path)
        return GuardedReader(raw, self.mapped, path)  # type: ignore[return-value]

    def stat(self, path: str) -> Entry:
        with self.mapped(path):
            info = self.fs.getinfo(path, namespaces=["details"])
        return Entry(info.name, info.is_dir, 0 if info.is_dir else info.size)

    def listdir(self, path: str) -> list[str]:
        with self.mapped(path):
            return sorted(self.fs.listdir(path))

    def exists(self, path: str) -> bool:
        with self.mapped(path):
            return bool(self.fs.exists(path))

    def isdir(self, path: str) -> bool:
        with self.mapped(path):
            return bool(self.fs.isdir(path))

    def makedirs(self, path: str) -> None:
        with self.mapped(path):
            self.fs.makedirs(path, recreate=True)

    def delete(self, path: str) -> None:
        with self.mapped(path):
            if self.fs.isdir(path):
                self.fs.removetree(path)
            else:
                self.fs.remove(path)

    def close(self) -> None:
        self.fs.close()

    def root_identity(self) -> str:
        return sha256_identity(repr(self.fs))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"



def as_store_error(err: errors.FSError, path: str, unavailable: tuple[type[Exception], ...]) -> StoreError:
    """The StoreError for a pyFilesystem error at ``path``; ``unavailable`` are the errors that
    mean the whole store is out of reach."""
    if isinstance(err, unavailable):
        return StoreUnavailable(redact(str(err)))
    if isinstance(err, errors.ResourceNotFound):
        return NotFound(f"nothing at {path} in the store")
    if isinstance(err, (errors.DestinationExists, errors.FileExists, errors.DirectoryExists)):
        return AlreadyExists(f"{path} already exists in the store")
    if isinstance(err, errors.ResourceReadOnly):
        return ReadOnly(f"cannot write {path}: the store is read-only")
    return StoreError(redact(str(err)))
