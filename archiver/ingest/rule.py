"""One compiled ``[[rules]]`` table, and the record operations its actions are made of:
reading and setting a field by its dotted path, and redacting a record. Pure logic, shared
by the compiler of the configuration (rules.py) and the code each plan of rules becomes
(rule_code.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from archiver.ingest.redactor import Redactor

KEPT = -1  # what a rule set answers for a record no rule dropped
_MISSING = object()

Path = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled ``[[rules]]`` table. None (or empty) conditions match everything."""

    label: str  # its name, else "rules[i]": the drop counters' label
    streams: re.Pattern[str] | None
    sources: frozenset[str] | None
    levels: frozenset[str] | None
    logger: re.Pattern[str] | None
    message: re.Pattern[str] | None
    fields: tuple[tuple[Path, re.Pattern[str]], ...]
    set: tuple[tuple[Path, Any], ...]
    redact: Redactor | None
    redact_fields: tuple[Path, ...] | None  # None: every field
    route: str | None
    drop: bool
    stop: bool
    # Whether the logger glob matched each logger seen: loggers repeat, and a lookup is cheaper
    # than a match. Bounded, like the plans.
    loggers: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled without the logger matches seen, which the sink's own copy gathers."""
        return Rule, tuple(getattr(self, name) for name in _RULE_FIELDS)

    def selects(self, source: str, stream: str) -> bool:
        """The conditions that hold for a whole batch: its source and a stream."""
        return (self.sources is None or source in self.sources) and (
            self.streams is None or self.streams.fullmatch(stream) is not None)

    def learn_logger(self, logger: str) -> bool:
        """Whether the logger glob matches ``logger``, remembered in ``loggers``."""
        assert self.logger is not None
        if len(self.loggers) > 4096:
            self.loggers.clear()
        hit = self.loggers[logger] = self.logger.fullmatch(logger) is not None
        return hit

    def redact_record(self, record: dict[str, Any]) -> None:
        """The ``redact`` action: the message, the logger, the level and every field, or the
        message and the chosen fields."""
        redactor = self.redact
        assert redactor is not None
        fields = record["fields"]
        if self.redact_fields is not None:
            _redact_chosen(record, redactor, self.redact_fields)
        elif redactor.may_hold((record["message"], record["logger"], record["level"], fields)):
            for key in ("message", "logger", "level"):  # the logger and level are taken from fields too
                if isinstance(record[key], str):
                    record[key] = redactor.sub(record[key])
            _redact_within(fields, redactor)


_RULE_FIELDS = tuple(name for name in Rule.__dataclass_fields__ if name != "loggers")


def get_field(fields: dict[str, Any], path: Path) -> Any:
    """``fields[a][b]...``, or a marker that is no value when a step is missing or no table."""
    value: Any = fields
    for key in path:
        if type(value) is not dict:
            return _MISSING
        value = value.get(key, _MISSING)
    return value


def put_field(fields: dict[str, Any], path: Path, value: Any) -> None:
    """Set ``fields[a][b]...``, making (or replacing non-table values with) tables on the way."""
    if len(path) == 1:
        fields[path[0]] = value
        return
    for key in path[:-1]:
        inner = fields.get(key)
        if type(inner) is not dict:
            inner = fields[key] = {}
        fields = inner
    fields[path[-1]] = value


def field_text(value: Any) -> str | None:
    """A field's value as the text a regex matches: strings as they are, numbers and booleans
    as JSON writes them; missing, null, objects and arrays match nothing."""
    if type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return None


def _redact_within(value: dict[str, Any] | list[Any], redactor: Redactor) -> None:
    """Every string in ``value``, however deep, redacted in place; nothing is allocated for a
    string the pattern does not match (``sub`` gives back the same object)."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, inner in items:
        if type(inner) is str:
            redacted = redactor.sub(inner)
            if redacted is not inner:
                value[key] = redacted  # type: ignore[index]
        elif isinstance(inner, (dict, list)):
            _redact_within(inner, redactor)


def _redact_chosen(record: dict[str, Any], redactor: Redactor, paths: tuple[Path, ...]) -> None:
    """The message, the chosen fields, and the field the message was taken from (its copy
    in ``fields``, which gets the message as redacted)."""
    fields = record["fields"]
    message = record["message"]
    redacted = None
    if isinstance(message, str):
        redacted = record["message"] = redactor.sub(message)
        if redacted is not message:
            for key, value in fields.items():
                if value == message:
                    fields[key] = redacted
    for path in paths:
        value = get_field(fields, path)
        if isinstance(value, str) and value is not redacted:
            cut = redactor.sub(value)
            if cut is not value:
                put_field(fields, path, cut)
