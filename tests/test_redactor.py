"""The redact pre-checks (archiver/ingest/redactor.py) never miss: on generated patterns and
records, a rule set redacts exactly what a plain ``re.sub`` over every string does, and the
checks find the literals and skeletons the ten benchmark rules rely on."""

from __future__ import annotations

import pickle
import re
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from archiver.format.record import Context
from archiver.ingest.decode.jsonbody import json_record
from archiver.ingest.redactor import REDACTED, Redactor
from archiver.ingest.rule import KEPT
from archiver.ingest.rules import RuleSet, compile_rules

# Pattern pieces that exercise each case of the analysis: literals and runs of them, classes,
# repeats, groups and branches, case-insensitivity, lookarounds and anchors (which the JSON
# text surrounds differently than a string's edges do), and what forbids a skeleton.
PIECES = [
    "tok_", "ab", "=", '"', "\\\\", "\\n", " ", "\u0663", "a", "b", "1", "x",
    "\\d", "\\w", "\\S", "\\s", ".", "[a-c]", "[^&\\s]", "[\"=]", "[B]",
    "+", "*", "?", "{2}", "{1,3}", "+?", "++", "{70}",
    "(?:ab|tok_)", "(?:a|b)", "(?i:ab)", "(?-i:ab)", "(?>a|ab)", "(a)\\1", "(?:x(?=y)|xy)",
    "\\b", "\\B", "^", "$", "\\A", "\\Z", "(?<!\\S)", "(?<!\\d\\d)", "(?!\\d)", "(?=a)", "(?<=a)", "(?<=ab=)",
    "(?<![a-z\"])", "(?!\")",
]
patterns = st.tuples(st.sampled_from(["", "(?i)", "(?m)", "(?s)", "(?a)"]),
                     st.lists(st.sampled_from(PIECES), min_size=1, max_size=6)).map(lambda t: t[0] + "".join(t[1]))
# Strings built from what the pieces look for, so that matches are common.
strings = st.lists(st.sampled_from(["tok_", "ab", "AB", "=", '"', "\\", "\n", " ", "\u0663", "a", "b", "1", "x",
                                    "y", "Z", "-", "&", "é"]), max_size=8).map("".join)
documents = st.dictionaries(strings, st.recursive(
    st.one_of(strings, st.integers(), st.floats(allow_nan=False), st.none(), st.booleans()),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(strings, inner, max_size=3),
    max_leaves=8,
), max_size=4)


def compiled(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except (re.error, OverflowError, RecursionError):
        assume(False)
        raise


def plainly(value: Any, pattern: re.Pattern[str]) -> Any:
    """Every string in ``value`` redacted, however deep: what a redact rule does, without checks."""
    if isinstance(value, str):
        return pattern.sub(REDACTED, value)
    if isinstance(value, dict):
        return {key: plainly(inner, pattern) for key, inner in value.items()}
    if isinstance(value, list):
        return [plainly(inner, pattern) for inner in value]
    return value


@settings(max_examples=600, deadline=None)
@given(patterns, st.lists(strings, max_size=4))
@example("(?<!\\S)tok_\\w+", ["tok_1"])  # the JSON text puts a quote where the string had its start
@example('(?<![a-z"])ab', ["ab"])
@example("(?>a|ab)(?<=b)x", ["abx"])  # an atomic group: no skeleton
def test_the_checks_never_miss(pattern: str, texts: list[str]) -> None:
    regex = compiled(pattern)
    redactor = Redactor(regex)
    assert [redactor.sub(text) for text in texts] == [regex.sub(REDACTED, text) for text in texts]
    if any(regex.search(text) for text in texts):
        assert redactor.may_hold(texts) and redactor.may_hold({"k": texts, "n": [1111111111111111, -1.5e300]})
    assert pickle.loads(pickle.dumps(redactor)) == redactor


@settings(max_examples=300, deadline=None)
@given(patterns, strings, strings, strings, documents, st.booleans())
@example("(?<!\\S)tok_\\w+", "", "", "", {"a": "tok_1"}, False)  # missed before the skeleton
def test_a_redact_rule_does_what_plain_substitution_does(
    pattern: str, message: str, logger: str, level: str, fields: dict[str, Any], chosen: bool,
) -> None:
    """Every field (and the message, logger and level) as re.sub over each leaves it; with
    redact_fields, the message, the fields that held it, and the chosen field."""
    regex = compiled(pattern)
    table: dict[str, Any] = {"redact": pattern}
    if chosen:
        table["redact_fields"] = ["k"]
    rules = RuleSet(compile_rules([table]))
    record = {**json_record({}, Context("app", None, 0.0)), "message": message, "logger": logger, "level": level,
              "fields": {**fields, "m": message, "k": fields.get("k", message + "k")}}
    if chosen:
        expected = {**record, "message": regex.sub(REDACTED, message), "fields": {
            key: regex.sub(REDACTED, value) if value == message or key == "k" and isinstance(value, str) else value
            for key, value in record["fields"].items()}}
    else:
        expected = plainly(record, regex)
    for key in ("stream", "source", "peer", "received", "ts"):
        expected[key] = record[key]
    assert rules.apply(record, "http") == KEPT
    assert record == expected


@pytest.mark.parametrize(("pattern", "literals", "skeleton"), [
    (r"\d(?<!\d\d)\d{3}[ -]?\d{4}[ -]?\d{4}[ -]?\d{1,4}(?!\d)", (), True),
    (r"(?:[Bb]earer [A-Za-z0-9._~+/-]+=*)|(?:(?<=[Pp]assword=)[^&\s]+)", ("earer ", "assword="), True),
    (r"tok_[0-9a-f]{12}", ("tok_",), True),
    (r"(?i)bearer \S+", (), True),
    (r"(?:x(?i:ab)|yz)cd", ("cd",), True),
    (r"a{3}b", ("aaab",), True),
    (r"(a)\1", ("a",), False),
    (r"(?>ab|a)c", ("c",), False),
])
def test_what_the_checks_find(pattern: str, literals: tuple[str, ...], skeleton: bool) -> None:
    redactor = Redactor(re.compile(pattern))
    assert redactor.literals == literals
    assert (redactor.skeleton is not None) == skeleton


def test_numbers_do_not_set_off_the_skeleton() -> None:
    """A thread id has as many digits as a card number, but numbers are never redacted."""
    card = Redactor(re.compile(r"\d(?<!\d\d)\d{3}[ -]?\d{4}[ -]?\d{4}[ -]?\d{1,4}(?!\d)"))
    numbers = {"thread": 140234567891234, "created": 1795467684.123456, "msg": "took 1234 ms"}
    assert not card.may_hold(numbers)
    assert card.may_hold({**numbers, "args": "('4111 1111 1111 1111',)"})
    assert card.may_hold([1111111111111, "x", 4111111111111111, "y 4111111111111111"])
