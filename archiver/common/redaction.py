"""Cutting secrets out of text that may name a store: Tahoe capabilities, a URL's password,
and query parameters that carry credentials (``?password=``, ``&secret=``, ``access_key``,
``token``, signatures). Applied to every store URL and store error the sink shows or logs.
"""

from __future__ import annotations

import re

MASK = "***"
# A capability, plain or percent-encoded as in a URL: its kind, then its body. What redact()
# makes of one (kind, at most four characters, "…") is tried first and kept, so a cap is cut
# once however often redacted, while a whole cap is cut whatever follows it.
_SEP = "(?::|%3[Aa])"
_CAP = re.compile(rf"(URI{_SEP}([A-Za-z0-9-]+){_SEP})(?:[A-Za-z0-9:%-]{{1,4}}…|((?:[A-Za-z0-9-]|{_SEP})+))")
# The kinds that grant writing: mutable files and directories. Every other kind reads or verifies.
WRITE_CAP_KINDS = frozenset({"DIR2", "SSK", "MDMF", "DIR2-MDMF"})
# scheme://user:password@host: the password is what lies between the first ":" of the
# userinfo and the first "@", as pyFilesystem's URL parser reads it (a secret may hold "/").
_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:@/?#]*:)[^\s@]*@")
# A query (or matrix) parameter whose name says it holds a secret; its value is cut (up to a
# colon that ends it in running text: "cannot open store URL: why").
_SECRET_PARAM = re.compile(
    r"([?&;][^\s=&#]*(?:pass|pwd|secret|token|key|sig|credential|auth)[^\s=&#]*=)[^\s&#]*?(?=:?(?:[\s&#]|$))",
    re.IGNORECASE,
)


def redact(text: str, *, keep_read_caps: bool = False) -> str:
    """Text with every capability cut to its kind and a few characters, and every URL
    password and secret query value replaced by ``***``. Redacting twice changes nothing.
    ``keep_read_caps`` cuts only write caps: for the sink's own log, where a read cap is what
    the operator looks for."""
    text = _CAP.sub(_cut_write if keep_read_caps else _cut, text)
    text = _PASSWORD.sub(rf"\g<1>{MASK}@", text)
    return _SECRET_PARAM.sub(rf"\g<1>{MASK}", text)


def _cut(cap: re.Match[str]) -> str:
    """A whole cap cut to its kind and four characters; one redact() already cut, unchanged."""
    kind, _, body = cap.groups()
    return cap[0] if body is None else f"{kind}{body[:4]}…"


def _cut_write(cap: re.Match[str]) -> str:
    return _cut(cap) if cap[2] in WRITE_CAP_KINDS else cap[0]
