"""Is a stored object still what was written? Read back and hashed, or checked cheaply.

A full check downloads the object and hashes it, and on a store with a health check also has
the store verify every share. A quick check reads no data: a store with a health check
answers from its servers (on Tahoe ``t=check`` without verify: which shares are there, and
how happy they are); any other store gives the object's size.
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO, Callable

from archiver.common.redaction import redact
from archiver.store.base import HealthCheck, Store, StoreError, StoreUnavailable


def sha256_of(stream: BinaryIO, progress: Callable[[int], None] = lambda n: None) -> str:
    """The hex sha256 of a stream read to its end in 1 MiB blocks; the stream is closed."""
    digest = hashlib.sha256()
    with stream:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
            progress(len(chunk))
    return digest.hexdigest()


def check_stored(
    store: Store,
    path: str,
    *,
    sha256: str,
    size: int,
    read: bool,
    shares_happy: int = 1,
    repair: bool = False,
    progress: Callable[[int], None] = lambda n: None,
) -> str | None:
    """What is wrong with the object at ``path`` (``sha256`` and ``size`` are what was
    written), or None. ``read`` downloads it; otherwise no data is read.

    An error that says the whole store is out of reach is checked by listing the store's
    root: when that fails too, StoreUnavailable goes up (the rest would fail the same way, and
    nothing was learnt about this object); when it works, only this object is unreadable
    (Tahoe says so of a file whose shares are all gone)."""
    try:
        if read:
            if sha256_of(store.open(path), progress) != sha256:
                return "the stored copy does not match its sha256"
        elif not isinstance(store, HealthCheck):
            found = store.stat(path).size
            return None if found == size else f"the stored copy has {found} bytes, not {size}"
        if not isinstance(store, HealthCheck):
            return None
        health = store.check(path, verify=read, repair=repair)
    except StoreUnavailable as err:
        store.listdir("/")
        return redact(str(err))
    except StoreError as err:
        return redact(str(err))
    if not health.healthy:
        return f"unhealthy: {health.summary or 'not healthy'}"
    if not health.enough(shares_happy):
        return f"unhealthy: count-happiness {health.happiness or 0} < shares.happy {shares_happy}"
    return None
