"""Rules at ingest (``[[rules]]``): what happens to each decoded record before it is written.

A rule matches on the record's stream, its source (``http``, ``tcp``), level, logger and any
field, and acts on it: ``set`` fields, ``redact`` secrets, ``route`` it to another stream,
``drop`` it, ``stop`` the rules after it. Rules run in order. Configuration tables are checked
and compiled once (``compile_rules``); ``RuleSet.apply_batch`` is the hot path, and allocates
nothing for a record that no rule matches. Pure logic, no I/O: it runs on the event loop for
small inputs and in the decode workers for large ones (a RuleSet pickles, and each worker
compiles it once). One rule is rule.py's ``Rule``; rule_code.py writes the code each plan of
rules runs as.
"""

from __future__ import annotations

import bisect
import fnmatch
import operator
import re
from functools import lru_cache, partial
from typing import Any, Iterable

import orjson

from archiver.format.record import Rejected, valid_stream_name
from archiver.ingest.decode.levels import normalize_level
from archiver.ingest.redactor import REDACTED, Redactor
from archiver.ingest.rule import KEPT, Path, Rule
from archiver.ingest.rule_code import PlanFunction, plan_function

RULE_SOURCES = ("http", "tcp")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ALL_FIELDS = "*"
_MATCH_KEYS = ("stream", "source", "level", "min_level", "logger", "message", "fields")
_ACTION_KEYS = ("set", "redact", "redact_fields", "route", "drop", "stop")
_KEYS = ("name", *_MATCH_KEYS, *_ACTION_KEYS)


# What a redact action changes in a record.
_REDACTABLE = operator.itemgetter("message", "logger", "level", "fields")


class RuleError(ValueError):
    """A rule that cannot work; the message names the rule (index, and name if any) and the key."""


class RuleSet:
    """Compiled rules in order. The rules that select each (source, stream) are worked out
    once, as a plan (within one batch every record shares them), and each plan runs as one
    function written for it (rule_code.py): per record only its level, logger, message and
    field tests are left."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules = tuple(rules)
        self._redactors = tuple(rule.redact for rule in self.rules if rule.redact is not None)
        patterns = [redactor.pattern.pattern for redactor in self._redactors]
        self._raw = re.compile(_either(patterns)) if patterns else None
        # A value a rule sets that a pattern matches: then a batch's own strings cannot tell
        # that nothing will be redacted.
        self._sets_redactable = any(
            isinstance(value, str) and redactor.pattern.search(value) is not None
            for rule in self.rules for _, value in rule.set for redactor in self._redactors)
        self._plans: dict[str, dict[str, tuple[int, ...]]] = {source: {} for source in RULE_SOURCES}
        self._entries: dict[tuple[str, bool], dict[str, PlanFunction]] = {
            (source, redacting): {} for source in RULE_SOURCES for redacting in (True, False)}
        self._functions: dict[tuple[str, bool, tuple[int, ...]], PlanFunction] = {}

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
        entries = self._entries[source, True]
        run = entries.get(record["stream"]) or self._entry(entries, source, True, record["stream"])
        return run(record, matched)

    def apply_batch(self, records: list[dict[str, Any]], source: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """``apply`` to each record of a batch, the redactions left out when ``may_redact``
        clears it: the records kept, and how many records each rule dropped, by its label."""
        redacting = self.may_redact(records)
        entries = self._entries[source, redacting]
        kept = []
        dropped: dict[str, int] = {}  # not a Counter, which costs 0.5 µs to build: a form request is one record
        for record in records:
            run = entries.get(record["stream"]) or self._entry(entries, source, redacting, record["stream"])
            index = run(record, None)
            if index == KEPT:
                kept.append(record)
            else:
                label = self.rules[index].label
                dropped[label] = dropped.get(label, 0) + 1
        return kept, dropped

    def _entry(self, entries: dict[str, PlanFunction], source: str, redacting: bool, stream: str) -> PlanFunction:
        if len(entries) > 4096:  # streams come from clients: keep the cache bounded
            entries.clear()
        run = entries[stream] = self._function(source, redacting, stream, -1)
        return run

    def may_redact(self, records: list[dict[str, Any]]) -> bool:
        """Whether a ``redact`` action may change any of ``records``. False only when no
        pattern can match a string of any of them, nor a value a rule sets: then no redaction
        can start, so none can leave text another pattern matches, and the records can go
        through the rules without their redactions. One test of the batch's JSON text in
        place of one a record and rule."""
        if not self._redactors:
            return False
        if self._sets_redactable:
            return True
        try:
            text = orjson.dumps(list(map(_REDACTABLE, records)))
        except TypeError:  # what orjson refuses (integers beyond 64 bits, lone surrogates): maybe
            return True
        return any(redactor.may_hold_json(text) for redactor in self._redactors)

    def _function(self, source: str, redacting: bool, stream: str, after: int) -> PlanFunction:
        """The function for the rules after index ``after`` that select ``source`` and ``stream``."""
        plan = self._plan(source, stream)
        plan = plan[bisect.bisect_right(plan, after):]
        key = (source, redacting, plan)
        run = self._functions.get(key)
        if run is None:
            if len(self._functions) > 4096:
                self._functions.clear()
            run = self._functions[key] = plan_function(self.rules, plan, redacting,
                                                       partial(self._goto, source, redacting))
        return run

    def _goto(self, source: str, redacting: bool, record: dict[str, Any], matched: list[str] | None,
              index: int) -> int:
        """A record rule ``index`` routed: on through the rules after it that select its new stream."""
        return self._function(source, redacting, record["stream"], index)(record, matched)

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
