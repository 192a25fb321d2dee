"""Rules at ingest (``[[rules]]``): what happens to each decoded record before it is written.

A rule matches on the record's stream, its source (``http``, ``tcp``), level, logger and any
field, and acts on it: ``set`` fields, ``redact`` secrets, ``route`` it to another stream,
``drop`` it, ``stop`` the rules after it. Rules run in order. Configuration tables are checked
and compiled once (``compile_rules``); ``RuleSet.apply`` is the per-record hot path and
allocates nothing for a record that no rule matches. Pure logic, no I/O: it runs on the event
loop for small inputs and in the decode workers for large ones (a RuleSet pickles, and each
worker compiles it once).
"""

from __future__ import annotations

import bisect
import fnmatch
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable

from archiver.format.record import Rejected, valid_stream_name
from archiver.ingest.decode.levels import normalize_level
from archiver.ingest.redactor import REDACTED, Redactor

RULE_SOURCES = ("http", "tcp")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ALL_FIELDS = "*"
KEPT = -1  # what apply() answers for a record no rule dropped
_MATCH_KEYS = ("stream", "source", "level", "min_level", "logger", "message", "fields")
_ACTION_KEYS = ("set", "redact", "redact_fields", "route", "drop", "stop")
_KEYS = ("name", *_MATCH_KEYS, *_ACTION_KEYS)
_MISSING = object()

Path = tuple[str, ...]


class RuleError(ValueError):
    """A rule that cannot work; the message names the rule (index, and name if any) and the key."""


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

    def matches(self, record: dict[str, Any]) -> bool:
        """The per-record conditions (``selects`` has been checked)."""
        if self.levels is not None and record["level"] not in self.levels:
            return False
        if self.logger is not None:
            logger = record["logger"]
            if logger is None:
                return False
            hit = self.loggers.get(logger)
            if hit is None:
                if len(self.loggers) > 4096:
                    self.loggers.clear()
                hit = self.loggers[logger] = self.logger.fullmatch(logger) is not None
            if not hit:
                return False
        if self.message is not None:
            message = record["message"]
            if not isinstance(message, str) or self.message.search(message) is None:
                return False
        for path, pattern in self.fields:
            value = _text(_get(record["fields"], path))
            if value is None or pattern.search(value) is None:
                return False
        return True

    def act(self, record: dict[str, Any]) -> None:
        """``set``, then ``redact``, then ``route`` (``drop`` and ``stop`` are the caller's)."""
        fields = record["fields"]
        for path, value in self.set:
            _put(fields, path, value)
        redactor = self.redact
        if redactor is not None:
            if self.redact_fields is not None:
                _redact_chosen(record, redactor, self.redact_fields)
            elif redactor.may_hold((record["message"], record["logger"], record["level"], fields)):
                for key in ("message", "logger", "level"):  # the logger and level are taken from fields too
                    if isinstance(record[key], str):
                        record[key] = redactor.sub(record[key])
                _redact_within(fields, redactor)
        if self.route is not None:
            record["stream"] = self.route


_RULE_FIELDS = tuple(name for name in Rule.__dataclass_fields__ if name != "loggers")


class RuleSet:
    """Compiled rules in order, with the rules that apply to each (source, stream) worked out
    once: within one batch every record shares them, so per record only level, logger,
    message and field conditions are checked."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._setup(tuple(rules))

    def _setup(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        patterns = [rule.redact.pattern.pattern for rule in self.rules if rule.redact is not None]
        self._raw = re.compile(_either(patterns)) if patterns else None
        self._plans: dict[str, dict[str, tuple[int, ...]]] = {source: {} for source in RULE_SOURCES}
        # Rules without per-record conditions (a redaction everywhere, a tag) match every record
        # their plan selects: no call to find that out.
        self._conditional = tuple(rule.levels is not None or rule.logger is not None or rule.message is not None
                                  or bool(rule.fields) for rule in rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RuleSet) and other.rules == self.rules

    def __hash__(self) -> int:
        return hash(self.rules)

    def __reduce__(self) -> tuple[Any, ...]:
        return shared_rule_set, (self.rules, _written(self.rules))

    def apply(self, record: dict[str, Any], source: str, matched: list[str] | None = None) -> int:
        """Run the rules on ``record`` in place. KEPT, or the index of the rule that dropped
        it; ``matched`` collects the labels of the rules that matched, for ``rules test``."""
        stream = record["stream"]
        plan = self._plan(source, stream)
        at = 0
        while at < len(plan):
            index = plan[at]
            at += 1
            rule = self.rules[index]
            if self._conditional[index] and not rule.matches(record):
                continue
            if matched is not None:
                matched.append(rule.label)
            if rule.drop:
                return index
            rule.act(record)
            if rule.stop:
                return KEPT
            if record["stream"] != stream:  # routed: the rules after this one that select its new stream
                stream = record["stream"]
                plan = self._plan(source, stream)
                at = bisect.bisect_right(plan, index)
        return KEPT

    def _redact_raw(self, raw: bytes) -> bytes:
        """Bytes that are no record (kept in ``_rejected``) with every ``redact`` pattern of
        every rule applied: their conditions cannot be checked on them, and a secret must not
        be kept because its record did not decode. Bytes that are not UTF-8 are kept as they are."""
        if self._raw is None or not raw:
            return raw
        text = raw.decode("utf-8", "surrogateescape")
        redacted = self._raw.sub(REDACTED, text)
        return raw if redacted == text else redacted.encode("utf-8", "surrogateescape")

    def _redact_text(self, text: str) -> str:
        """A rejection's reason, which may quote the input, redacted like its bytes."""
        return text if self._raw is None else self._raw.sub(REDACTED, text)

    def redact_rejected(self, items: list[Rejected]) -> list[Rejected]:
        """What goes to ``_rejected``, its bytes and reason redacted."""
        if self._raw is None:
            return items
        return [Rejected(self._redact_text(item.reason), self._redact_raw(item.raw)) for item in items]

    def _plan(self, source: str, stream: str) -> tuple[int, ...]:
        plans = self._plans[source]
        plan = plans.get(stream)
        if plan is None:
            if len(plans) > 4096:  # streams come from clients: keep the cache bounded
                plans.clear()
            plan = plans[stream] = tuple(i for i, rule in enumerate(self.rules) if rule.selects(source, stream))
        return plan


NO_RULES = RuleSet()


@lru_cache(maxsize=16)
def shared_rule_set(rules: tuple[Rule, ...], written: tuple[tuple[str, ...], ...]) -> RuleSet:
    """The process's RuleSet for ``rules``: a decode worker is sent the rules with every input,
    and keeps its plans and logger matches from one to the next. ``written`` (the values the
    rules set, as written) tells apart rules that are equal only because ``1 == True``."""
    return RuleSet(rules)


def _written(rules: tuple[Rule, ...]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(repr(value) for _, value in rule.set) for rule in rules)


def compile_rules(tables: Any) -> tuple[Rule, ...]:
    """The ``[[rules]]`` array of tables, checked and compiled; RuleError names what is wrong."""
    if tables in ("", (), []):
        return ()
    if isinstance(tables, str):
        raise RuleError("rules are written as [[rules]] tables in the config file, not in the environment")
    if not isinstance(tables, (list, tuple)):
        raise RuleError("rules must be an array of tables ([[rules]])")
    rules = tuple(_compile(index, table) for index, table in enumerate(tables))
    labels = [rule.label for rule in rules]
    for index, label in enumerate(labels):
        if label in labels[:index]:
            raise RuleError(f"rules[{index}] ({label!r}): name: another rule has this name")
    return rules


def _compile(index: int, table: Any) -> Rule:
    where = f"rules[{index}]"
    if not isinstance(table, dict):
        raise RuleError(f"{where}: must be a table")
    name = table.get("name")
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise RuleError(f"{where}: name: expected a non-empty string")
        where = f"{where} ({name!r})"

    def fail(key: str, problem: str) -> RuleError:
        return RuleError(f"{where}: {key}: {problem}")

    for key in table:
        if key not in _KEYS:
            raise fail(key, f"unknown key (known: {', '.join(_KEYS)})")
    get = _Reader(table, fail)
    if "level" in table and "min_level" in table:
        raise fail("min_level", "give level (exact) or min_level, not both")
    levels = get.levels("level", exact=True) or get.levels("min_level", exact=False)
    redact_paths = get.paths("redact_fields")
    redact_patterns = get.strings("redact")
    if redact_paths and not redact_patterns:
        raise fail("redact_fields", "needs redact patterns (what to cut out of those fields)")
    route = table.get("route")
    if route is not None and (not isinstance(route, str) or not valid_stream_name(route)):
        raise fail("route", "expected a stream name: 1-64 of [A-Za-z0-9._-], not starting with '_' or '.'")
    drop, stop = get.flag("drop"), get.flag("stop")
    assignments = get.pairs("set", scalars=True)
    if drop and (redact_patterns or assignments or route or stop):
        raise fail("drop", "a dropped record is not written: drop goes with no other action")
    if not (drop or stop or route or redact_patterns or assignments):
        raise RuleError(f"{where}: the rule does nothing: give set, redact, route, drop or stop")
    globs = get.strings("stream")
    sources = get.strings("source")
    for source in sources:
        if source not in RULE_SOURCES:
            raise fail("source", f"{source!r} is not one of {', '.join(RULE_SOURCES)}")
    loggers = get.strings("logger")
    return Rule(
        label=name if name is not None else where,
        streams=_globs(globs),
        sources=frozenset(sources) if sources else None,
        levels=levels,
        logger=_globs(loggers),
        message=get.pattern("message", table.get("message")) if "message" in table else None,
        fields=tuple((path, get.pattern(f"fields.{'.'.join(path)}", value))
                     for path, value in get.pairs("fields", scalars=False)),
        set=assignments,
        redact=Redactor(get.pattern("redact", _either(get.pattern("redact", p).pattern for p in redact_patterns)))
        if redact_patterns else None,
        redact_fields=None if not redact_paths or (ALL_FIELDS,) in redact_paths else redact_paths,
        route=route,
        drop=drop,
        stop=stop,
    )


class _Reader:
    """Typed reads of one rule's keys, each failing with the rule and key named."""

    def __init__(self, table: dict[str, Any], fail: Any) -> None:
        self.values = table
        self.fail = fail

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.values.get(key, ())
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) and item for item in items):
            raise self.fail(key, "expected a non-empty string or a list of them")
        return tuple(items)

    def flag(self, key: str) -> bool:
        value = self.values.get(key, False)
        if not isinstance(value, bool):
            raise self.fail(key, "expected true or false")
        return value

    def pattern(self, key: str, value: Any) -> re.Pattern[str]:
        if not isinstance(value, str):
            raise self.fail(key, "expected a regular expression (a string)")
        try:
            return re.compile(value)
        except re.error as err:
            raise self.fail(key, f"invalid regular expression: {err}") from None

    def levels(self, key: str, *, exact: bool) -> frozenset[str] | None:
        names = self.strings(key)
        if not names:
            return None
        known = []
        for name in names:
            level = normalize_level(name)
            if level not in LEVELS:
                raise self.fail(key, f"{name!r} is not a level ({', '.join(LEVELS)})")
            known.append(level)
        if exact:
            return frozenset(known)
        if len(known) > 1:
            raise self.fail(key, "expected one level")
        return frozenset(LEVELS[LEVELS.index(known[0]):])

    def paths(self, key: str) -> tuple[Path, ...]:
        paths = tuple(tuple(item.split(".")) for item in self.strings(key))
        if any("" in path for path in paths):
            raise self.fail(key, "a field path is dotted names, such as http.path")
        return paths

    def pairs(self, key: str, *, scalars: bool) -> tuple[tuple[Path, Any], ...]:
        """``{"a.b" = v}`` and ``a.b = v`` (nested tables) alike: (path, leaf value) pairs."""
        value = self.values.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "expected a table of field paths")
        pairs = list(_leaves(value, ()))
        for path, leaf in pairs:
            if scalars and (not isinstance(leaf, (str, int, float, bool)) or "" in path):
                raise self.fail(f"{key}.{'.'.join(path)}", "expected a string, number or boolean")
        return tuple(pairs)


def _leaves(table: dict[str, Any], prefix: Path) -> Iterable[tuple[Path, Any]]:
    for key, value in table.items():
        path = (*prefix, *key.split("."))
        if isinstance(value, dict):
            yield from _leaves(value, path)
        else:
            yield path, value


def _globs(globs: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile(_either(map(fnmatch.translate, globs))) if globs else None


_GLOBAL_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")


def _either(patterns: Iterable[str]) -> str:
    """One pattern matching what any of ``patterns`` matches; a leading ``(?i)`` of one becomes
    ``(?i:...)``, since global flags are only allowed at the start of the whole."""
    parts = []
    for pattern in patterns:
        flags = _GLOBAL_FLAGS.match(pattern)
        parts.append(f"(?{flags[1]}:{pattern[flags.end():]})" if flags else f"(?:{pattern})")
    return "|".join(parts)


def _get(fields: dict[str, Any], path: Path) -> Any:
    value: Any = fields
    for key in path:
        if type(value) is not dict:
            return _MISSING
        value = value.get(key, _MISSING)
    return value


def _put(fields: dict[str, Any], path: Path, value: Any) -> None:
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


def _text(value: Any) -> str | None:
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
        value = _get(fields, path)
        if isinstance(value, str) and value is not redacted:
            cut = redactor.sub(value)
            if cut is not value:
                _put(fields, path, cut)
