"""A plan of rules (the rules that select one source and stream, in order) as one Python
function of straight-line code.

Interpreting the rules cost a loop turn, a call and a few lookups for every rule and record,
whether the rule matched or not: most of what ten rules cost a record. The function written
here tests each rule's conditions inline and runs its actions in place, and a rule set builds
one per plan it meets (see ``RuleSet``), so per record only the tests themselves are left.

Only the rules' structure goes into the source text. Every value taken from the configuration
(patterns, field names, values to set, labels, stream names) is bound to a generated name in
the function's globals, so nothing a configuration holds is ever read as code.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from archiver.ingest.rule import KEPT, Rule, field_text, put_field


class Goto(Protocol):
    """What a routed record goes on to: the rules after ``index`` that select its new stream."""

    def __call__(self, record: dict[str, Any], matched: list[str] | None, index: int) -> int: ...


PlanFunction = Callable[[dict[str, Any], "list[str] | None"], int]


def plan_function(rules: tuple[Rule, ...], plan: tuple[int, ...], redacting: bool, goto: Goto) -> PlanFunction:
    """``plan``'s rules as one function ``(record, matched) -> KEPT or the index of the rule
    that dropped it``, which changes ``record`` in place and appends the labels of the rules
    that matched to ``matched`` (None: not collected). Without ``redacting``, ``redact``
    actions are left out: the caller has found that no pattern can match the record."""
    writer = _Writer()
    writer.line("def run(record, matched):")
    writer.depth = 1
    if any(rules[index].route is not None and not rules[index].stop for index in plan):
        writer.line('stream = record["stream"]')
    writer.line('fields = record["fields"]')  # rules change the table, never replace it
    for index in plan:
        rule = rules[index]
        if _does_nothing(rule, redacting):
            continue
        unconditional = _write_rule(writer, index, rule, redacting)
        writer.depth = 1
        if unconditional and (rule.drop or rule.stop):
            break  # the rules after it are never reached
    else:
        writer.line("return KEPT")
    names: dict[str, Any] = {"KEPT": KEPT, "goto": goto, "field_text": field_text, "put_field": put_field,
                             **writer.names}
    exec(compile("\n".join(writer.lines), f"<rules plan {plan}>", "exec"), names)  # noqa: S102 - see the docstring
    run: PlanFunction = names["run"]
    return run


def _does_nothing(rule: Rule, redacting: bool) -> bool:
    return not (rule.drop or rule.stop or rule.route is not None or rule.set or (redacting and rule.redact))


def _write_rule(writer: _Writer, index: int, rule: Rule, redacting: bool) -> bool:
    """One rule: its conditions as nested tests, its actions inside. Whether it had none."""
    writer.line(f"# rules[{index}]")
    unconditional = True
    if rule.levels is not None:
        writer.open(f'record["level"] in {writer.bind(rule.levels, "levels")}')
        unconditional = False
    if rule.logger is not None:
        seen = writer.bind(rule.loggers, "loggers")
        writer.line('logger = record["logger"]')
        writer.open("logger is not None")
        writer.line(f"hit = {seen}.get(logger)")
        writer.line("if hit is None:")
        writer.line(f"    hit = {writer.bind(rule.learn_logger, 'learn')}(logger)")
        writer.open("hit")
        unconditional = False
    if rule.message is not None:
        writer.line('message = record["message"]')
        writer.open(f"isinstance(message, str) and {writer.bind(rule.message, 'message')}.search(message) is not None")
        unconditional = False
    for path, pattern in rule.fields:
        writer.line(f'value = fields.get({writer.bind(path[0], "key")})')
        for key in path[1:]:
            writer.line(f'value = value.get({writer.bind(key, "key")}) if type(value) is dict else None')
        writer.open("value is not None")
        writer.line("if type(value) is not str:")
        writer.line("    value = field_text(value)")
        writer.open(f"value is not None and {writer.bind(pattern, 'field')}.search(value) is not None")
        unconditional = False
    writer.line(f"if matched is not None: matched.append({writer.bind(rule.label, 'label')})")
    if rule.drop:
        writer.line(f"return {index}")
        return unconditional
    for path, value in rule.set:
        bound = writer.bind(value, "value")
        if len(path) == 1:
            writer.line(f'fields[{writer.bind(path[0], "key")}] = {bound}')
        else:
            writer.line(f'put_field(fields, {writer.bind(path, "path")}, {bound})')
    if redacting and rule.redact is not None:
        writer.line(f"{writer.bind(rule.redact_record, 'redact')}(record)")
    if rule.route is not None:
        route = writer.bind(rule.route, "route")
        writer.line(f'record["stream"] = {route}')
        if not rule.stop:
            writer.line(f"if {route} != stream:")
            writer.line(f"    return goto(record, matched, {index})")
    if rule.stop:
        writer.line("return KEPT")
    return unconditional


class _Writer:
    """Lines of source at an indentation, and the values they name."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {}
        self.depth = 0

    def line(self, text: str) -> None:
        self.lines.append("    " * self.depth + text)

    def open(self, test: str) -> None:
        """A test whose block holds everything written after it (until the rule ends)."""
        self.line(f"if {test}:")
        self.depth += 1

    def bind(self, value: Any, hint: str) -> str:
        name = f"{hint}_{len(self.names)}"
        self.names[name] = value
        return name
