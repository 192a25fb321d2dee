"""The rules engine alone (archiver/ingest/rules.py): validation that names the rule and key,
each condition and action, routing and stop, redaction of records and of rejected bytes, a
RuleSet that pickles for the decode workers, the recipes of docs/recipes.md, and `archiver
rules test`."""

from __future__ import annotations

import pickle
import re
import time
import tomllib
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.app.config import ConfigError, load_config
from archiver.app.rules_command import rules_group
from archiver.format.record import Context, Rejected, encode_record
from archiver.ingest.decode.jsonbody import json_record
from archiver.ingest.rule import KEPT, Rule, field_text, get_field, put_field
from archiver.ingest.rules import REDACTED, RuleError, RuleSet, compile_rules

ROOT = Path(__file__).resolve().parent.parent


def ruleset(*tables: dict[str, Any]) -> RuleSet:
    return RuleSet(compile_rules(list(tables)))


def record(stream: str = "app", **fields: Any) -> dict[str, Any]:
    return json_record(fields, Context(stream, "127.0.0.1", 1795467684.25))


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ([{"drop": True}, {"name": "x", "routee": "a"}], r"rules\[1\] \('x'\): routee: unknown key"),
        ([{"name": "lvl", "level": "LOUD", "drop": True}], r"rules\[0\] \('lvl'\): level: 'LOUD' is not a level"),
        ([{"level": "INFO", "min_level": "INFO", "drop": True}], r"rules\[0\]: min_level: .*not both"),
        ([{"message": "(unclosed", "drop": True}], r"rules\[0\]: message: invalid regular expression"),
        ([{"fields": {"http": {"path": "["}}, "drop": True}], r"rules\[0\]: fields.http.path: invalid regular"),
        ([{"route": "_rejected"}], r"rules\[0\]: route: expected a stream name"),
        ([{"source": "udp", "drop": True}], r"rules\[0\]: source: 'udp' is not one of http, tcp"),
        ([{"drop": True, "route": "a"}], r"rules\[0\]: drop: .*no other action"),
        ([{"name": "idle", "logger": "x"}], r"rules\[0\] \('idle'\): the rule does nothing"),
        ([{"redact_fields": ["a"], "set": {"b": 1}}], r"rules\[0\]: redact_fields: needs redact patterns"),
        ([{"set": {"a": [1]}}], r"rules\[0\]: set.a: expected a string, number or boolean"),
        ([{"name": "a", "drop": True}, {"name": "a", "stop": True}], r"rules\[1\] \('a'\): name: another rule"),
        ([{"drop": "yes"}], r"rules\[0\]: drop: expected true or false"),
    ],
)
def test_errors_name_the_rule_and_the_key(tables: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(RuleError, match=message):
        compile_rules(tables)


def test_config_file_rules_and_their_errors(tmp_path: Path) -> None:
    path = tmp_path / "archiver.toml"
    path.write_text('[[rules]]\nname = "hc"\nlogger = "health*"\ndrop = true\n\n'
                    '[[rules]]\nfields.http.status = "^5"\nset = { alert = true }\n')
    rules = load_config(path).rules
    assert [rule.label for rule in rules] == ["hc", "rules[1]"] and rules[1].fields[0][0] == ("http", "status")
    path.write_text('[[rules]]\nname = "hc"\nlogger = "health*"\n')
    with pytest.raises(ConfigError, match=rf"rules\[0\] \('hc'\): the rule does nothing.* \(from {path}\)"):
        load_config(path)
    with pytest.raises(ConfigError, match="not in the environment"):
        load_config(env={"ARCHIVER_RULES": "drop"})


def test_conditions() -> None:
    rules = ruleset(
        {"name": "lvl", "min_level": "warn", "stream": "app*", "set": {"hit": "lvl"}, "stop": True},
        {"name": "exact", "level": ["debug"], "logger": ["db.*"], "set": {"hit": "exact"}, "stop": True},
        {"name": "msg", "message": "^GET /", "source": "tcp", "set": {"hit": "msg"}, "stop": True},
        {"name": "field", "fields": {"http.status": "^5\\d\\d$", "ok": "^false$"}, "set": {"hit": "field"}},
    )
    cases = [
        (record(level="ERROR"), "http", "lvl"),
        (record("audit", level="ERROR"), "http", None),
        (record(level="INFO"), "http", None),
        (record(level="DEBUG", logger="db.pool"), "http", "exact"),
        (record(level="DEBUG", logger="web"), "http", None),
        (record(message="GET / 200"), "tcp", "msg"),
        (record(message="GET / 200"), "http", None),
        (record(http={"status": 503}, ok=False), "http", "field"),
        (record(http={"status": 200}, ok=False), "http", None),
        (record(http="503", ok=False), "http", None),
    ]
    for item, source, hit in cases:
        assert rules.apply(item, source) == KEPT
        assert item["fields"].get("hit") == hit, (item, source)


def test_drop_route_stop_and_set() -> None:
    rules = ruleset(
        {"name": "probe", "logger": "kube-probe*", "drop": True},
        {"name": "web", "fields": {"PROGRAM": "^nginx$"}, "route": "web"},
        {"name": "web only", "stream": "web", "set": {"tags.team": "edge"}},
        {"name": "app only", "stream": "app", "set": {"tags.team": "core"}},
        {"name": "end", "stream": "web", "stop": True},
        {"name": "never for web", "set": {"late": 1}},
    )
    assert rules.apply(record(logger="kube-probe/1.29"), "http") == 0
    web = record(PROGRAM="nginx", tags="was text")
    matched: list[str] = []
    assert rules.apply(web, "tcp", matched) == KEPT
    assert matched == ["web", "web only", "end"]
    assert web["stream"] == "web" and web["fields"]["tags"] == {"team": "edge"} and "late" not in web["fields"]
    app = record(PROGRAM="cron")
    assert rules.apply(app, "tcp") == KEPT
    assert app["stream"] == "app" and app["fields"]["tags"] == {"team": "core"} and app["fields"]["late"] == 1


def test_redaction_of_records() -> None:
    everywhere = ruleset({"redact": [r"\b(?:\d[ -]?){12,15}\d\b", "hunter2"]})
    item = record(message="card 4111-1111-1111-1111", nested={"list": ["pw hunter2", 4111111111111111]})
    everywhere.apply(item, "http")
    assert item["message"] == "card [REDACTED]" and item["fields"]["message"] == "card [REDACTED]"
    assert item["fields"]["nested"] == {"list": ["pw [REDACTED]", 4111111111111111]}  # numbers are not text

    # The one search of the fields' JSON text must not hide a match: escaped strings, anchors.
    escaped = ruleset({"redact": "s3cret"}, {"redact": "^pw=\\S+$"})
    item = record(quoted='say "s3cret"\n', anchored="pw=hunter2", deep={"x": ["pw=2"]})
    escaped.apply(item, "http")
    assert item["fields"] == {"quoted": 'say "[REDACTED]"\n', "anchored": "[REDACTED]", "deep": {"x": ["[REDACTED]"]}}

    chosen = ruleset({"redact": "s3cret", "redact_fields": ["auth.password"]})
    item = record(MESSAGE="login s3cret", auth={"password": "s3cret!"}, other="s3cret")
    chosen.apply(item, "http")
    assert item["message"] == "login [REDACTED]" and item["fields"]["MESSAGE"] == "login [REDACTED]"
    assert item["fields"]["auth"]["password"] == "[REDACTED]!" and item["fields"]["other"] == "s3cret"


def test_redaction_of_rejected_bytes() -> None:
    rules = ruleset({"stream": "other", "redact": ["tok_[a-z]+"]}, {"drop": True, "logger": "x"})
    raw = b"\xff\xfe not utf-8 tok_abc \x80"
    (item,) = rules.redact_rejected([Rejected("bad tok_def", raw)])
    assert item == Rejected(f"bad {REDACTED}", b"\xff\xfe not utf-8 [REDACTED] \x80")
    assert RuleSet().redact_rejected([Rejected("r", raw)])[0].raw == raw


def test_a_record_no_rule_matches_costs_no_allocation() -> None:
    rules = ruleset(
        {"logger": "healthcheck", "drop": True}, {"level": "DEBUG", "stream": "app", "drop": True},
        {"fields": {"PROGRAM": "^nginx$"}, "route": "web"}, {"stream": "audit", "set": {"a": 1}},
        {"message": "password=", "redact": "password=\\S+"},
    )
    item = record(logger="app.main", level="INFO", message="user logged in", PROGRAM="cron")
    before = encode_record(item)
    rules.apply(item, "http")  # builds the plan for ("http", "app") once
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for _ in range(2000):
            rules.apply(item, "http")
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert grown < 1024 and encode_record(item) == before


def test_recipes_in_the_docs_compile_and_do_what_they_say() -> None:
    """Every TOML block of the rules section of docs/recipes.md, and the example of
    config/archiver.toml, as one rule set."""
    recipes = (ROOT / "docs" / "recipes.md").read_text().split("## Rules at ingest", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", recipes, re.S)
    example = (ROOT / "config" / "archiver.toml").read_text().split("# [[rules]]", 1)[1].split("rules = []")[0]
    tables = [table for text in blocks for table in tomllib.loads(text)["rules"]]
    tables += [{**table, "name": f"{table['name']} (config example)"}
               for table in tomllib.loads("[[rules]]" + example.replace("# ", ""))["rules"]]
    rules = ruleset(*tables)
    probe = record(logger="kube-probe/1.29")
    assert rules.apply(probe, "http") != KEPT
    assert rules.apply(record(http={"path": "/healthz"}), "http") != KEPT
    nginx = record(PROGRAM="nginx", MESSAGE="GET /pay?card=4111 1111 1111 1111 Authorization: Bearer abc.def")
    assert rules.apply(nginx, "tcp") == KEPT
    assert nginx["stream"] == "web" and nginx["message"] == "GET /pay?card=[REDACTED] Authorization: [REDACTED]"
    login = record(message="GET /login?user=a&password=hunter2&x=1")
    rules.apply(login, "http")
    assert login["message"] == "GET /login?user=a&password=[REDACTED]&x=1"


def test_rules_test_command(tmp_path: Path) -> None:
    config = tmp_path / "archiver.toml"
    config.write_text('[[rules]]\nname = "hc"\nlogger = "healthcheck"\ndrop = true\n\n'
                      '[[rules]]\nname = "card"\nredact = \'\\d{16}\'\n\n'
                      '[[rules]]\nname = "nginx"\nsource = "tcp"\nfields = { PROGRAM = "nginx" }\nroute = "web"\n')
    lines = b'{"logger": "healthcheck"}\n\n{"PROGRAM": "nginx", "MESSAGE": "card 4111111111111111"}\nnot json 4111111111111111\n'
    result = CliRunner().invoke(rules_group, ["test", "-c", str(config), "--source", "tcp"], input=lines)
    assert result.exit_code == 0, result.output
    first, second, third = map(orjson.loads, result.stdout.splitlines())
    assert first == {"line": 1, "matched": ["hc"], "dropped_by": "hc"}
    assert second["line"] == 3 and second["matched"] == ["card", "nginx"]
    assert second["record"]["stream"] == "web" and second["record"]["message"] == "card [REDACTED]"
    assert third["line"] == 4 and third["raw"] == "not json [REDACTED]"
    lines = b'{"logger": "healthcheck", "n": 1}\nname=web&msg=card+4111111111111111&args=()\n'
    result = CliRunner().invoke(rules_group, ["test", "-c", str(config), "--stream", "app"], input=lines)
    first, second = map(orjson.loads, result.stdout.splitlines())
    assert first == {"line": 1, "matched": ["hc"], "dropped_by": "hc"}
    assert second["record"]["source"] == "httphandler" and second["record"]["message"] == "card [REDACTED]"
    assert second["matched"] == ["card"] and second["record"]["stream"] == "app"
    config.write_text('[[rules]]\nroute = "_x"\n')
    result = CliRunner().invoke(rules_group, ["test", "-c", str(config)], input=b"")
    assert result.exit_code == 1 and "rules[0]: route: expected a stream name" in result.output


# Records as clients send them: a few keys the rules look at, values that may hold a secret.
SECRET = "tok_9f8e7d6c5b4a"
values = st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1), st.booleans(), st.none(),
                   st.sampled_from([SECRET, f"x {SECRET} y", f"{SECRET}{SECRET}"]))
documents = st.dictionaries(
    st.sampled_from(["message", "MESSAGE", "logger", "PROGRAM", "level", "user", "a"]),
    st.recursive(values, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=3), max_leaves=5),
    max_size=6,
)
tables = st.lists(
    st.fixed_dictionaries({}, optional={
        "stream": st.sampled_from(["app", "a*", "web"]), "source": st.sampled_from(["http", "tcp"]),
        "min_level": st.sampled_from(["INFO", "ERROR"]), "logger": st.sampled_from(["db.*", "x"]),
        "fields": st.sampled_from([{"user": "^a"}, {"a.b": "1"}]),
    }).flatmap(lambda match: st.sampled_from([{"drop": True}, {"route": "web"}, {"set": {"t.u": 1}}, {"stop": True}])
               .map(lambda action: {**match, **action})),
    max_size=6,
)


texts = st.one_of(st.none(), st.text(max_size=12), st.sampled_from([SECRET, f"x {SECRET} y"]))


@settings(max_examples=100, deadline=None)
@given(documents, texts, texts, texts, tables, st.sampled_from(["http", "tcp"]))
def test_property_a_redacted_secret_never_survives(
    document: dict[str, Any], message: str | None, logger: str | None, level: str | None, rules: list[dict[str, Any]],
    source: str,
) -> None:
    """Whatever other rules do first, a record a catch-all redact rule reaches holds no secret;
    a pickled rule set (as the decode workers get it) does exactly what the original does."""
    compiled = RuleSet(compile_rules([*rules, {"name": "secret", "redact": "tok_[0-9a-f]{12}"}]))
    first = {**record(), "message": message, "logger": logger, "level": level, "fields": document}
    second = orjson.loads(orjson.dumps(first))
    outcome = compiled.apply(first, source, matched := [])
    assert pickle.loads(pickle.dumps(compiled)).apply(second, source, again := []) == outcome
    assert (first, matched) == (second, again)
    if outcome == KEPT and "secret" in matched:
        assert SECRET.encode() not in encode_record(first)


def reference(rules: tuple[Rule, ...], item: dict[str, Any], source: str, matched: list[str]) -> int:
    """What docs/recipes.md says the rules do, one rule after another: the model the code
    each plan becomes is checked against."""
    for index, rule in enumerate(rules):
        if not (rule.selects(source, item["stream"]) and holds(rule, item)):
            continue
        matched.append(rule.label)
        if rule.drop:
            return index
        for path, value in rule.set:
            put_field(item["fields"], path, value)
        if rule.redact is not None:
            rule.redact_record(item)
        if rule.route is not None:
            item["stream"] = rule.route
        if rule.stop:
            return KEPT
    return KEPT


def holds(rule: Rule, item: dict[str, Any]) -> bool:
    logger, message = item["logger"], item["message"]
    texts = [field_text(get_field(item["fields"], path)) for path, _ in rule.fields]
    return ((rule.levels is None or item["level"] in rule.levels)
            and (rule.logger is None or (logger is not None and rule.logger.fullmatch(logger) is not None))
            and (rule.message is None or (isinstance(message, str) and rule.message.search(message) is not None))
            and all(text is not None and pattern.search(text) for text, (_, pattern) in zip(texts, rule.fields)))


any_rules = st.lists(
    st.fixed_dictionaries({}, optional={
        "stream": st.sampled_from(["app", "a*", "web", ["web", "audit"]]), "source": st.sampled_from(["http", "tcp"]),
        "level": st.sampled_from(["INFO", ["DEBUG", "ERROR"]]), "logger": st.sampled_from(["db.*", "x", "tok_*"]),
        "message": st.sampled_from(["^x", "tok_", r"\d"]),
        "fields": st.sampled_from([{"user": "^a"}, {"a.b": "1"}, {"a": "^true$"}, {"user": "7", "MESSAGE": "."}]),
    }).flatmap(lambda match: st.sampled_from([
        {"drop": True}, {"route": "web"}, {"route": "audit", "stop": True}, {"route": "app", "set": {"user": "a"}},
        {"set": {"t.u": 1}}, {"set": {"a": True, "b": f"x {SECRET}"}}, {"stop": True}, {"redact": "tok_[0-9a-f]{12}"},
        {"redact": ["x", r"y\d"], "redact_fields": ["a", "user.name"]},
    ]).map(lambda action: {**match, **action})),
    max_size=7,
)
levels = st.one_of(texts, st.sampled_from(["DEBUG", "INFO", "ERROR"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(documents, texts, texts, levels, st.sampled_from(["app", "web", "audit", "other"])),
                min_size=1, max_size=4), any_rules, st.sampled_from(["http", "tcp"]))
def test_property_the_code_of_a_plan_does_what_the_rules_say(
    items: list[tuple[dict[str, Any], str | None, str | None, str | None, str]], tables: list[dict[str, Any]],
    source: str,
) -> None:
    """Record by record (``apply``, with the labels matched) and a batch at a time
    (``apply_batch``, which leaves redactions out of a batch no pattern can match), the rules
    do to each record what the rules, read one after another, say."""
    rules = RuleSet(compile_rules(tables))
    records = [{**record(stream), "message": message, "logger": logger, "level": level, "fields": document}
               for document, message, logger, level, stream in items]
    expected = [orjson.loads(orjson.dumps(item)) for item in records]
    outcomes: list[int] = []
    matches: list[list[str]] = []
    for item in expected:
        matches.append(labels := [])
        outcomes.append(reference(rules.rules, item, source, labels))
    one_by_one = [orjson.loads(orjson.dumps(item)) for item in records]
    for item, outcome, labels in zip(one_by_one, outcomes, matches):
        assert rules.apply(item, source, seen := []) == outcome
        assert seen == labels
    assert one_by_one == expected
    kept, dropped = rules.apply_batch(records, source)
    assert kept == [item for item, outcome in zip(expected, outcomes) if outcome == KEPT]
    assert dropped == Counter(rules.rules[outcome].label for outcome in outcomes if outcome != KEPT)


def test_a_batch_no_pattern_can_match_skips_redaction_but_not_what_rules_set() -> None:
    """``may_redact`` clears a batch only when no string of it can match, and a value a rule
    sets counts as one of its strings."""
    rules = ruleset({"redact": "tok_[0-9a-f]{12}"}, {"logger": "x", "set": {"hit": True}})
    clean = [record(message=f"request {n}", logger="x") for n in range(50)]
    assert not rules.may_redact(clean)
    assert rules.may_redact([*clean, record(user={"token": [f"a {SECRET}"]})])
    assert not ruleset({"set": {"a": 1}}).may_redact(clean)
    setting = ruleset({"set": {"note": f"key {SECRET}"}}, {"redact": "tok_[0-9a-f]{12}"})
    assert setting.may_redact(clean)
    kept, dropped = setting.apply_batch(clean, "http")
    assert dropped == {} and {item["fields"]["note"] for item in kept} == {"key [REDACTED]"}


def test_configuration_values_are_data_in_the_code_of_a_plan() -> None:
    """A rule's values are bound as names, never written into the code a plan becomes: quotes,
    newlines and Python in names, keys, values and routes stay what they are."""
    odd = '"; raise SystemExit(1)\nimport os #'
    rules = ruleset({"name": odd, "fields": {odd: "^x"}, "set": {odd: odd, f"{odd}.deep": odd}},
                    {"name": f"{odd} 2", "logger": odd + "*", "route": "web"}, {"stream": "web", "set": {"seen": odd}})
    item = record(**{odd: "x"}, logger=odd + "!")
    assert rules.apply(item, "http", matched := []) == KEPT
    assert matched == [odd, f"{odd} 2", "rules[2]"] and item["stream"] == "web"
    assert item["fields"][odd] == {"deep": odd} and item["fields"]["seen"] == odd


def test_one_function_a_plan_whatever_the_streams() -> None:
    """Streams come from clients: a stream no rule names shares its plan's code with every
    other such stream, so a client sending new stream names costs no compilation."""
    rules = ruleset({"stream": "audit", "drop": True}, {"logger": "x", "set": {"a": 1}})
    for number in range(200):
        rules.apply(record(f"s{number}"), "http")
        rules.apply_batch([record(f"t{number}")], "tcp")
    assert len(rules._functions) == 2  # (http, every plan without the audit rule), the same for tcp


def test_a_process_compiles_rules_it_is_sent_once() -> None:
    """A decode worker unpickles the rules with every input: it gets the rule set it already
    has (its plans and logger matches kept), and the sink's logger matches are not sent."""
    rules = RuleSet(compile_rules([{"name": "noise", "logger": "noisy.*", "drop": True},
                                   {"name": "cards", "redact": r"\d{4}-\d{4}-\d{4}-\d{4}"}]))
    assert rules.apply({**record(), "logger": "noisy.db"}, "tcp") == 0
    assert rules.rules[0].loggers == {"noisy.db": True}
    sent = pickle.dumps(rules)
    received = pickle.loads(sent)
    assert received == rules and received is not rules
    assert received.rules[0].loggers == {}
    assert received.apply({**record(), "logger": "noisy.web"}, "tcp") == 0
    assert pickle.loads(sent) is received and received.rules[0].loggers == {"noisy.web": True}
    assert received.rules[1].redact is pickle.loads(pickle.dumps(rules.rules[1].redact))
    flagged, counted = (RuleSet(compile_rules([{"set": {"priority": value}}])) for value in (True, 1))
    assert flagged == counted  # 1 == True, yet each keeps what it sets
    assert pickle.loads(pickle.dumps(flagged)).rules[0].set[0][1] is True
    assert type(pickle.loads(pickle.dumps(counted)).rules[0].set[0][1]) is int
