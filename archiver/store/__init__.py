"""Stores: where sealed segments go. Any pyFilesystem2 URL; ``tahoe://`` is TahoeFS.

``open_store("tahoe://127.0.0.1:3456/URI:DIR2:...")`` or ``open_store("osfs:///var/lib/archive")``
(the local fallback, created when missing).
"""

from __future__ import annotations

import fs
from fs.base import FS

from archiver.common.redaction import redact
from archiver.store.tahoe import TahoeFS

__all__ = ["TahoeFS", "open_store"]


def open_store(url: str) -> FS:
    """The filesystem for a store URL; errors name the URL with its secrets redacted."""
    try:
        return fs.open_fs(url, create=True)
    except fs.errors.FSError as err:
        raise fs.errors.CreateFailed(f"cannot open store {redact(url)}: {redact(str(err))}") from None
