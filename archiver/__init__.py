"""archiver: an archiving log sink. Records in over HTTP, durable JSON-lines segments out.

The public API is what ``__all__`` lists; modules are implementation details. Its names are
imported on first use, so a process that needs only part of the package (the sink's decode
workers, the CLI's ``serve``) does not pay for the reader's dependencies (fs, requests).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Archive": ("read.reader", "Archive"),
    "ArchiveHandler": ("client", "ArchiveHandler"),
    "FormattingHTTPHandler": ("client", "FormattingHTTPHandler"),
    "Segment": ("format.manifest", "SegmentRow"),
    "VerifyReport": ("read.reader", "VerifyReport"),
    "open_archive": ("app.archives", "open_archive"),
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from archiver.app.archives import open_archive
    from archiver.client import ArchiveHandler, FormattingHTTPHandler
    from archiver.format.manifest import SegmentRow as Segment
    from archiver.read.reader import Archive, VerifyReport


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'archiver' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
