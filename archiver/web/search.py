"""A search as its URL says it: parsed from a GET query, turned into Archive filters, and
written back into a query for the next page or a shared link. Pure: no I/O."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace
from typing import Any, Mapping
from urllib.parse import urlencode

from archiver.common.units import parse_time
from archiver.read.reader import LEVEL_ORDER, Filters

PAGE_SIZE = 100
LEVELS = tuple(LEVEL_ORDER)


class SearchError(ValueError):
    """A query a person typed that cannot be searched; the page says why."""


@dataclass(frozen=True)
class Search:
    """What the search form holds. ``fields`` are ``key=value`` pairs (``value`` a glob) matched
    against the record's ``fields``; ``page`` counts pages of PAGE_SIZE matches."""

    stream: str = ""
    since: str = ""
    until: str = ""
    level: str = ""
    logger: str = ""
    text: str = ""
    fields: tuple[tuple[str, str], ...] = field(default=())
    page: int = 0

    @classmethod
    def from_query(cls, query: Mapping[str, str], field_specs: list[str]) -> "Search":
        """From a request's query (``field`` may repeat: pass every value in ``field_specs``)."""
        pairs = []
        for spec in field_specs:
            if not spec.strip():
                continue
            key, sep, value = spec.partition("=")
            if not sep or not key.strip():
                raise SearchError(f"a field filter is key=value, not {spec!r}")
            pairs.append((key.strip(), value.strip()))
        try:
            page = max(0, int(query.get("page") or 0))
        except ValueError:
            raise SearchError("page must be a number") from None
        level = (query.get("level") or "").strip().upper()
        return cls(
            stream=(query.get("stream") or "").strip(), since=(query.get("since") or "").strip(),
            until=(query.get("until") or "").strip(), level=level, logger=(query.get("logger") or "").strip(),
            text=query.get("text") or "", fields=tuple(pairs), page=page,
        )

    def filters(self, now: float) -> Filters:
        """The Archive filters this search means; times may be ages (``2h``) relative to ``now``."""
        try:
            since = parse_time(self.since, now) if self.since else None
            until = parse_time(self.until, now) if self.until else None
        except ValueError as err:
            raise SearchError(str(err)) from None
        where = _fields_match(self.fields) if self.fields else None
        return Filters(self.stream or None, since, until, self.level or None, self.logger or None,
                       self.text or None, where)

    def query(self, **changes: Any) -> str:
        """The URL query of this search (with ``changes``), empty values left out: the link to share."""
        search = replace(self, **changes)
        items: list[tuple[str, str]] = [
            (name, value) for name in ("stream", "since", "until", "level", "logger", "text")
            if (value := getattr(search, name))
        ]
        items += [("field", f"{key}={value}") for key, value in search.fields]
        if search.page:
            items.append(("page", str(search.page)))
        return urlencode(items)


def _fields_match(pairs: tuple[tuple[str, str], ...]) -> Any:
    def where(record: dict[str, Any]) -> bool:
        values = record.get("fields") or {}
        return all(key in values and fnmatch.fnmatchcase(_text(values[key]), glob) for key, glob in pairs)

    return where


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)
