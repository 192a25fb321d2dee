"""A ``redact`` pattern with the checks that let most text skip it.

A redact rule applies to every record, and most records hold nothing to redact: running the
regular expression over each string is what made redaction the dearest part of the rules. Two
checks, each worked out from the pattern's parsed form once, say when text cannot hold a match:

- literals: text that has none of them cannot match (a ``[Bb]earer ...`` match contains
  ``earer ``; ``(?<=[Pp]assword=)...`` needs ``assword=`` right before it). A substring test,
  far cheaper than a regex search.
- the skeleton: the pattern without its zero-width assertions (lookarounds, anchors, ``\\b``).
  It matches wherever the pattern matches, and depends on nothing outside the match, so it can
  be searched once in the JSON text of all a record's strings: a string that JSON writes
  without escapes appears in that text as it is, and a match in it is a match there. Matches
  that start outside the strings (in a number: a thread id has 15 digits) are passed over.

Both are necessary conditions only: a "maybe" runs the pattern itself, string by string.
The pattern is read with the ``re`` module's own parser (``re._parser``, not a public API):
tests/test_redactor.py runs on every Python the project supports (``make test-3.12`` and
``make test-3.13`` too).
"""

from __future__ import annotations

import re
from functools import lru_cache, partial
from re import _compiler  # type: ignore[attr-defined]
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser  # type: ignore[attr-defined]
from typing import Any, AnyStr, Callable

import orjson

REDACTED = "[REDACTED]"

# Operations that consume nothing: the characters on either side stay next to each other.
_ZERO_WIDTH = (sre.AT, sre.ASSERT_NOT)
# A skeleton cannot stand for a pattern with these: backreferences (to groups an assertion may
# hold), and atomic groups or possessive repeats, which commit to the first way their content
# matches, so taking an assertion out of it can turn a match into none.
_NO_SKELETON = {sre.GROUPREF, sre.GROUPREF_EXISTS, sre.ATOMIC_GROUP, sre.POSSESSIVE_REPEAT}


class Redactor:
    """One rule's ``redact`` patterns as one compiled pattern, with its pre-checks. Pickles as
    its pattern, and a process analyses each pattern once (a decode worker unpickles the rules
    with every input it is sent); equal when the patterns are."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        parsed = _parser.parse(pattern.pattern, pattern.flags)
        ignorecase = bool(parsed.state.flags & re.IGNORECASE)
        # Literals, one of which every match contains; () when the pattern names none.
        self.literals: tuple[str, ...] = _best(_needs(parsed, ignorecase))
        self._json_literals = _verbatim(self.literals)
        # The pattern without its assertions; None where that could miss a match.
        self.skeleton = _skeleton(parsed, pattern.flags)
        self._shapes = _shapes(parsed, pattern.flags) if self.skeleton is not None else None

    def __reduce__(self) -> tuple[Any, ...]:
        return shared_redactor, (self.pattern,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Redactor) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    def __repr__(self) -> str:
        return f"Redactor({self.pattern.pattern!r})"

    def sub(self, text: str) -> str:
        """``text`` with every match replaced; the same object when nothing matched."""
        if self.literals:
            for literal in self.literals:
                if literal in text:
                    break
            else:
                return text
        return self.pattern.sub(REDACTED, text)

    def may_hold(self, value: Any) -> bool:
        """Whether any string inside ``value`` (nested lists, dicts and tuples; keys are not
        redacted and may give false alarms) may hold a match: tests of its JSON text."""
        try:
            text = orjson.dumps(value)
        except TypeError:  # what orjson refuses (integers beyond 64 bits, lone surrogates): maybe
            return True
        return self.may_hold_json(text)

    def may_hold_json(self, text: bytes) -> bool:
        """``may_hold`` of the value orjson wrote as ``text``."""
        if self._json_literals is not None and not _holds_one(text, self._json_literals):
            return False
        if self._shapes is not None and text.isascii():
            table, shapes = self._shapes
            symbols = text.translate(table)
            if not _holds_one(symbols, shapes):
                return False
        # Escapes: a quote may be inside a string, and strings are not in the text as they are.
        if self.skeleton is None or b"\\" in text:
            return True
        if self._shapes is not None and text.isascii() and not any(
                _starts_in_a_string(symbols, b'"', partial(symbols.find, shape)) for shape in shapes):
            return False
        written = text.decode()
        return _starts_in_a_string(written, '"', partial(_found_at, self.skeleton, written))


@lru_cache(maxsize=256)
def shared_redactor(pattern: re.Pattern[str]) -> Redactor:
    """The process's Redactor for ``pattern``: the analysis costs hundreds of microseconds."""
    return Redactor(pattern)


def _holds_one(text: bytes, parts: tuple[bytes, ...]) -> bool:
    for part in parts:  # a loop, not any(): this runs for every record
        if part in text:
            return True
    return False


def _found_at(pattern: re.Pattern[str], text: str, at: int) -> int:
    found = pattern.search(text, at)
    return -1 if found is None else found.start()


def _starts_in_a_string(text: AnyStr, quote: AnyStr, find: Callable[[int], int]) -> bool:
    """Whether anything ``find`` finds (its position at or after the one given, -1 for none)
    starts inside a string of the JSON ``text``, which has no escapes, so that every quote
    opens or closes a string (or a key): an odd count of quotes before a position puts it
    inside one. What starts outside, in a number, is passed over, and the search goes on
    from the next string."""
    at = find(0)
    counted = inside = 0
    while at >= 0:
        inside ^= text.count(quote, counted, at) & 1
        if inside:
            return True
        counted = text.find(quote, at)
        if counted < 0:
            return False
        at = find(counted + 1)
    return False


def _verbatim(literals: tuple[str, ...]) -> tuple[bytes, ...] | None:
    """The literals as JSON text holds them, if JSON writes each as it is (a literal with a
    quote, a backslash or a control character is escaped there: then no literal test)."""
    if not literals:
        return None
    encoded = tuple(literal.encode("utf-8", "surrogatepass") for literal in literals)
    try:
        if all(orjson.dumps(literal)[1:-1] == raw for literal, raw in zip(literals, encoded)):
            return encoded
    except TypeError:
        pass
    return None


def _best(candidates: list[tuple[str, ...]]) -> tuple[str, ...]:
    """The most selective of the candidates: the one whose shortest literal is longest."""
    return max(candidates, key=lambda literals: min(map(len, literals)), default=())


def _needs(items: Any, ignorecase: bool) -> list[tuple[str, ...]]:
    """What a match of the sequence ``items`` must contain: each candidate a tuple of
    literals, one of which is in every match. Runs of consecutive literal characters are
    candidates; so are the candidates of any part every match goes through."""
    candidates: list[tuple[str, ...]] = []
    run = ""

    def end_run() -> None:
        nonlocal run
        if run:
            candidates.append((run,))
        run = ""

    for op, av in items:
        char = _char((op, av), ignorecase)
        if char is not None:
            run += char
        elif op in _ZERO_WIDTH:
            continue
        elif op is sre.ASSERT and av[0] < 0:  # a lookbehind: its text ends where the match goes on
            end_run()
            inner = _needs(av[1], ignorecase)
            if inner and _ends_with_run(av[1], ignorecase):
                run = inner.pop()[0]
            candidates += inner
        elif op is sre.ASSERT:  # a lookahead: its text starts where the match goes on
            end_run()
            candidates += _needs(av[1], ignorecase)
        elif op is sre.SUBPATTERN:
            end_run()
            _, add_flags, del_flags, inner_items = av
            inner_case = (ignorecase or bool(add_flags & re.IGNORECASE)) and not del_flags & re.IGNORECASE
            candidates += _needs(inner_items, inner_case)
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT) and av[0] >= 1:
            low, high, inner_items = av
            repeated = _char(inner_items[0], ignorecase) if len(inner_items) == 1 else None
            if repeated is not None:
                run += repeated * min(low, 64)
                if high != low or low > 64:
                    end_run()
            else:
                end_run()
                candidates += _needs(inner_items, ignorecase)
        elif op is sre.BRANCH:
            end_run()
            choices = [_best(_needs(branch, ignorecase)) for branch in av[1]]
            if all(choices):
                candidates.append(tuple(literal for choice in choices for literal in choice))
        else:
            end_run()
    end_run()
    return candidates


def _char(item: tuple[Any, Any], ignorecase: bool) -> str | None:
    """The one character this item matches, if it is a single case-sensitive literal."""
    op, av = item
    if ignorecase:
        return None
    if op is sre.LITERAL:
        return chr(av)
    if op is sre.IN and len(av) == 1 and av[0][0] is sre.LITERAL:
        return chr(av[0][1])
    return None


def _ends_with_run(items: Any, ignorecase: bool) -> bool:
    """Whether the last item of ``items`` is a literal character (so the last candidate
    _needs found for them is the run that ends at their end)."""
    return bool(items) and _char(items[-1], ignorecase) is not None


def _skeleton(parsed: Any, flags: int) -> re.Pattern[str] | None:
    """The pattern without its zero-width assertions, or None where that could miss a match."""
    if _uses(parsed, _NO_SKELETON):
        return None
    _strip(parsed)
    try:
        return _compiler.compile(parsed, flags)
    except (re.error, RecursionError, OverflowError):
        return None


def _uses(items: Any, ops: set[Any]) -> bool:
    return any(op in ops or any(_uses(inner, ops) for inner in _inner(op, av)) for op, av in items)


def _strip(items: Any) -> None:
    """Take every assertion out of the parsed ``items``, in place."""
    items.data[:] = [(op, av) for op, av in items.data if op not in (sre.AT, sre.ASSERT, sre.ASSERT_NOT)]
    for op, av in items.data:
        for inner in _inner(op, av):
            _strip(inner)


def _inner(op: Any, av: Any) -> list[Any]:
    """The parsed sequences inside one item."""
    if op is sre.SUBPATTERN:
        return [av[3]]
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
        return [av[2]]
    if op is sre.BRANCH:
        return list(av[1])
    if op in (sre.ASSERT, sre.ASSERT_NOT, sre.ATOMIC_GROUP):
        return [av[1] if op is not sre.ATOMIC_GROUP else av]
    if op is sre.GROUPREF_EXISTS:
        return [branch for branch in av[1:] if branch is not None]
    return []


# Characters JSON escapes: a class holding one of them is not in JSON text as it is.
_ESCAPED = frozenset([ord('"'), ord("\\"), *range(32)])
_SINGLE = (sre.LITERAL, sre.NOT_LITERAL, sre.IN, sre.ANY)
# Each shape is one more substring test a record: an optional character doubles them, and
# where the limit stops that, the shapes end (``\\d{4}[ -]?\\d{4}`` gives two, of 8 and 9).
_MAX_SHAPES = 2


def _shapes(parsed: Any, flags: int) -> tuple[bytes, tuple[bytes, ...]] | None:
    """For a pattern (stripped of assertions) that starts with single characters from a few
    classes, as the card pattern does (``\\d{4}[ -]?\\d{4}...``): a translation of ASCII JSON
    text that writes each class's characters as one symbol (quotes stay quotes), and the
    strings of symbols one of which any match starts with (``AAAAAAAA``, ``AAAABAAAA``).
    Substring tests for those are far cheaper than the search; None when the pattern does not
    start so, or its classes overlap or hold a character JSON escapes."""
    items = list(parsed)
    while len(items) == 1 and items[0][0] is sre.SUBPATTERN and not items[0][1][1] and not items[0][1][2]:
        items = list(items[0][1][3])  # a group around the whole, as the rules put around each pattern
    classes: list[frozenset[int]] = []
    shapes = [b""]
    for op, av in items:
        low, high, inner = av if op in (sre.MAX_REPEAT, sre.MIN_REPEAT) else (1, 1, [(op, av)])
        chars = _ascii_class(inner, flags, parsed.state)
        if chars is None or chars & _ESCAPED or low > 64:
            break
        if chars not in classes:
            if any(chars & other for other in classes):
                break
            classes.append(chars)
        symbol = bytes([ord("A") + classes.index(chars)])
        if high - low == 1 and len(shapes) < _MAX_SHAPES:
            shapes = [shape + symbol * count for shape in shapes for count in (low, high)]
        else:
            shapes = [shape + symbol * low for shape in shapes]
            if high != low:
                break
    if min(map(len, shapes)) < 3:
        return None
    table = bytearray(b"_" * 256)
    table[ord('"')] = ord('"')
    for index, chars in enumerate(classes):
        for char in chars:
            table[char] = ord("A") + index
    return bytes(table), tuple(shapes)


def _ascii_class(items: Any, flags: int, state: Any) -> frozenset[int] | None:
    """The ASCII characters a one-character item matches (under the pattern's flags), or None
    if ``items`` is not one such item."""
    if len(items) != 1 or items[0][0] not in _SINGLE:
        return None
    single = _compiler.compile(_parser.SubPattern(state, list(items)), flags)
    return frozenset(char for char in range(128) if single.fullmatch(chr(char)))
