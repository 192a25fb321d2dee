"""archiver: an archiving log sink. Records in over HTTP, durable JSON-lines segments out.

The public API is what ``__all__`` lists; modules are implementation details.
"""

__version__ = "0.1.0"

from .client import ArchiveHandler, FormattingHTTPHandler  # noqa: E402
from .manifest import SegmentRow as Segment  # noqa: E402
from .reader import Archive, VerifyReport, open_archive  # noqa: E402

__all__ = [
    "Archive",
    "ArchiveHandler",
    "FormattingHTTPHandler",
    "Segment",
    "VerifyReport",
    "__version__",
    "open_archive",
]
