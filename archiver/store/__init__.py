"""Stores: where sealed segments go, behind the Store protocol (archiver.store.base).

``open_store("tahoe://127.0.0.1:3456/URI:DIR2:...")`` is a TahoeStore; any other pyFilesystem2
URL (``osfs:///var/lib/archive``, created when missing; ``mem://``) is an FsStore. TahoeFS,
the pyFilesystem2 FS over Tahoe, and its ``tahoe://`` opener stay usable by other programs.
"""

from __future__ import annotations

import warnings
from typing import Callable

with warnings.catch_warnings():
    # fs 2.4.16 declares its namespace through pkg_resources, which setuptools 81 (what a
    # Python 3.12 or 3.13 venv gets) deprecates with a warning at import: it would open the
    # stderr of every command, about code that is not ours.
    warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
    from fs.errors import FSError
    from fs.opener import open_fs
    from fs.opener.errors import OpenerError

from archiver.common.redaction import redact
from archiver.store import tahoe
from archiver.store.base import (
    AlreadyExists, Corrupt, Entry, GridStatus, HasCaps, Health, HealthCheck, LeaseRenewal, NotFound, ReadOnly,
    Store, StoreError, StoreUnavailable, Stored, Unhealthy,
)
from archiver.store.fs import FsStore, as_store_error
from archiver.store.tahoe import TahoeFS, TahoeStore

__all__ = [
    "AlreadyExists", "Corrupt", "Entry", "FsStore", "GridStatus", "HasCaps", "Health", "HealthCheck", "LeaseRenewal",
    "NotFound", "ReadOnly", "Store", "StoreError", "StoreUnavailable", "Stored", "TahoeFS", "TahoeStore", "Unhealthy",
    "names_root", "open_store", "public_url",
]


def open_store(
    url: str, *, root_cap: str | None = None, make_root: bool = False,
    on_root: Callable[[Stored], None] = lambda caps: None, create: bool = True,
) -> Store:
    """The store at ``url``; errors name the URL with its secrets redacted. For a URL that
    names a node but not a root (``tahoe://HOST:PORT``), ``root_cap`` is the root kept from an
    earlier open, else (``make_root``: the sink's first start) a root is made; ``on_root`` hears
    the root's caps, for the caller to keep (see ``tahoe.open_tahoe``). A filesystem store is
    made when missing unless ``create`` is false: a reader given a store that is not there (a
    data dir whose store was moved) must say so, not read an empty one."""
    shown = redact(url)
    try:
        if url.startswith("tahoe://"):
            return tahoe.open_tahoe(url, root_cap=root_cap, make_root=make_root, on_root=on_root)
        return FsStore(open_fs(url, create=create), url)
    except (ValueError, OpenerError) as err:
        raise StoreError(f"cannot open store {shown}: {err}") from None
    except FSError as err:
        failure = as_store_error(err, shown, TahoeStore.UNAVAILABLE)
        raise type(failure)(f"cannot open store {shown}: {failure}") from None
    except StoreError as err:
        raise type(err)(f"cannot open store {shown}: {err}") from None


def public_url(url: str) -> str | None:
    """A store URL fit for status output: no capability, password or secret parameter."""
    if not url:
        return None
    return tahoe.public_url(url) if url.startswith("tahoe://") else redact(url)


def names_root(url: str) -> bool:
    """Whether ``url`` names its root itself; else (``tahoe://HOST:PORT``) the root's caps are
    kept aside, and a root is made when none is."""
    return not url.startswith("tahoe://") or tahoe.names_root(url)
