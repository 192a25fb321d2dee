"""The capabilities of a stored path, for stores that have them (Tahoe); None elsewhere."""

from __future__ import annotations

from typing import Any, Mapping

from fs.base import FS


def stored_caps(store: FS, path: str) -> dict[str, Any]:
    """write/read/verify caps of a stored path; all None for stores without capabilities."""
    return _cap_fields(store.getinfo(path, namespaces=["tahoe"]).raw.get("tahoe", {}))


def _cap_fields(tahoe: Mapping[str, Any]) -> dict[str, Any]:
    return {"write_cap": tahoe.get("write_cap"), "read_cap": tahoe.get("read_cap"), "verify_cap": tahoe.get("verify_cap")}
