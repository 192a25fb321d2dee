"""archiver: an archiving log sink. Records in over HTTP, durable JSON-lines segments out.

The public API is what ``__all__`` lists; modules are implementation details.
"""

__version__ = "0.1.0"

from .reader import Archive, open_archive  # noqa: E402

__all__ = ["Archive", "__version__", "open_archive"]
