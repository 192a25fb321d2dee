"""What the uploader and the reader ask of a store, so that they never learn which one it is.

``Store`` holds the operations every backend has. What only some backends can do is declared
by type: a backend inherits ``HasCaps``, ``HealthCheck``, ``LeaseRenewal``, ``GridStatus`` or
``Freezing``,
and callers ask ``isinstance(store, HealthCheck)``. Every backend raises only ``StoreError``
and its subclasses, with messages whose capabilities are redacted.

Paths are absolute, '/' separated, under the store's root.
"""

from __future__ import annotations

import hashlib
import io
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, BinaryIO, Collection, Iterator


class StoreError(Exception):
    """A store operation failed; the message says what, never with a capability in clear."""


class StoreUnavailable(StoreError):
    """The store as a whole cannot be used now (unreachable, too few servers): the rest of a
    batch would fail the same way, so callers stop and retry later."""


class NotFound(StoreError):
    """Nothing at that path (or under that capability)."""


class AlreadyExists(StoreError):
    """Something is already at that path."""


class Corrupt(StoreError):
    """The stored bytes cannot be what was written."""


class Unhealthy(StoreError):
    """The stored object is readable but not as redundant as the store promises."""


class ReadOnly(StoreError):
    """The store was opened read-only (a read capability)."""


class Frozen(StoreError):
    """The directory written into is frozen (immutable): thaw it first (``Freezing``)."""


@dataclass(frozen=True)
class Stored:
    """The capabilities of a stored file or directory; all None for stores without them."""

    read_cap: str | None = None
    write_cap: str | None = None
    verify_cap: str | None = None


@dataclass(frozen=True)
class Entry:
    """One name in a directory."""

    name: str
    is_dir: bool
    size: int


@dataclass(frozen=True)
class Health:
    """A store's health check of one object, parsed once for every caller."""

    healthy: bool
    happiness: int | None = None
    shares_good: int | None = None
    shares_expected: int | None = None
    repaired: bool | None = None
    summary: str = ""

    def enough(self, shares_happy: int) -> bool:
        """Healthy, and on at least ``shares_happy`` servers."""
        return self.healthy and (self.happiness or 0) >= shares_happy

    def as_dict(self) -> dict[str, Any]:
        """The form kept in the manifest's health column."""
        return {
            "healthy": self.healthy,
            "count-happiness": self.happiness,
            "count-shares-good": self.shares_good,
            "count-shares-expected": self.shares_expected,
            "repaired": self.repaired,
        }


class Store(ABC):
    """A tree of immutable files, written whole and read as streams."""

    @property
    @abstractmethod
    def url(self) -> str:
        """The store's URL for people: no capability, password or secret query parameter."""

    @property
    def location(self) -> str | None:
        """The URL that opens this store again, given the root capability kept aside (it may
        hold a password, never a capability); None when the store was not opened by URL."""
        return None

    @abstractmethod
    def put(self, path: str, file: BinaryIO, parent: str | None = None) -> Stored:
        """Write ``file`` at ``path`` (replacing a file there) and return its capabilities.
        ``parent`` is the write capability of the path's directory when the caller knows it:
        a store with caps may write through it instead of walking the path."""

    @abstractmethod
    def open(self, path: str) -> BinaryIO:
        """The file at ``path``, for streaming reads."""

    @abstractmethod
    def stat(self, path: str) -> Entry:
        """What is at ``path``; NotFound when nothing is."""

    @abstractmethod
    def listdir(self, path: str) -> list[str]:
        """The names in the directory at ``path``, sorted."""

    @abstractmethod
    def exists(self, path: str) -> bool:
        """Whether anything is at ``path``."""

    @abstractmethod
    def isdir(self, path: str) -> bool:
        """Whether a directory is at ``path``."""

    @abstractmethod
    def makedirs(self, path: str) -> None:
        """Make the directory at ``path`` and any missing parents; fine when it exists."""

    @abstractmethod
    def delete(self, path: str) -> None:
        """Remove the file, or the whole directory, at ``path``."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store is not used after."""

    @abstractmethod
    def root_identity(self) -> str:
        """A name for the store's root that gives nothing away: what the manifest records the
        directories it made under, so a store.url naming another root forgets them."""

    def read_bytes(self, path: str) -> bytes:
        """The whole file at ``path``: for small files (published manifests)."""
        with self.open(path) as file:
            return file.read()

    def walk_files(self, path: str = "/", exclude: tuple[str, ...] = ()) -> Iterator[str]:
        """Every file under ``path``, depth first in name order; directories named in
        ``exclude`` are skipped."""
        for name in self.listdir(path):
            child = f"{path.rstrip('/')}/{name}"
            if self.isdir(child):
                if child not in exclude:
                    yield from self.walk_files(child, exclude)
            else:
                yield child


def sha256_identity(secret: str) -> str:
    """A digest of what names a root, for ``root_identity``: never the name in clear."""
    return hashlib.sha256(secret.encode()).hexdigest()


class HasCaps(ABC):
    """A store whose files and directories have capabilities that outlive their paths."""

    @abstractmethod
    def caps(self, path: str) -> Stored:
        """The capabilities of what is at ``path``."""

    @abstractmethod
    def open_cap(self, cap: str, size: int, name: str = "") -> BinaryIO:
        """The file a read capability names, without walking any directory (``name`` is what
        errors show)."""


def caps_of(store: Store, path: str) -> Stored:
    """The caps of a stored path: none for a store without them."""
    return store.caps(path) if isinstance(store, HasCaps) else Stored()


class HealthCheck(ABC):
    """A store that can check (and repair) the redundancy of what it holds."""

    @abstractmethod
    def check(self, path: str, *, verify: bool = True, repair: bool = False) -> Health:
        """Check the object at ``path``: ``verify`` reads every share back, ``repair`` makes
        up for the missing ones."""


class LeaseRenewal(ABC):
    """A store whose servers drop what nobody keeps leasing."""

    @abstractmethod
    def renew_lease(self, path: str) -> Health:
        """Renew the leases on the object at ``path``; the check that came with it."""

    @abstractmethod
    def renew_lease_cap(self, cap: str, name: str = "") -> Health:
        """Renew the leases on the object ``cap`` (a read cap) names, wherever it is linked;
        ``name`` is what errors show instead of the cap."""

    @abstractmethod
    def renew_leases_deep(self, path: str = "/") -> Iterator[str]:
        """Renew the leases on every object reachable from the directory ``path``, yielding
        each object's path as it is done: what a holder of a read cap alone can keep alive."""


class GridStatus(ABC):
    """A store spread over servers that can say how many it reaches."""

    @abstractmethod
    def servers_connected(self) -> int | None:
        """Storage servers reachable now; None when it cannot say."""


class Freezing(ABC):
    """A store whose directories can be made immutable once nothing more is added to them:
    an immutable directory is never rewritten, and a holder of its verify cap can check and
    repair it. Freezing and thawing replace the directory at a path by a new one holding the
    same children; the files themselves are not touched."""

    @abstractmethod
    def freeze(self, path: str, holds: Collection[str] = ()) -> Stored:
        """Link an immutable copy of the directory at ``path`` in its place; its caps (no
        write cap). StoreError when a child cannot go in an immutable directory (a mutable
        one), when the directory changed while it was being frozen, or when a name of
        ``holds`` (files known to be in it) is not among the children read (a stale copy of
        the directory): it is left mutable."""

    @abstractmethod
    def thaw(self, path: str) -> Stored:
        """Link a mutable copy of the frozen directory at ``path`` in its place (so a late
        file can be added); its caps."""


class GuardedReader(io.RawIOBase):
    """A store's open file whose read errors are the store's: ``map_error`` turns whatever
    the backend raises mid-stream into a StoreError."""

    def __init__(self, raw: BinaryIO, map_error: Any, name: str) -> None:
        super().__init__()
        self._raw = raw
        self._map = map_error
        self.name = name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return bool(self._raw.seekable())

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        with self._map(self.name):
            return self._raw.seek(offset, whence)

    def readinto(self, buffer: Any) -> int:
        with self._map(self.name):
            data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()
