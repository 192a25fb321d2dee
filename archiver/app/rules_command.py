"""``archiver rules test``: what a config's ``[[rules]]`` make of sample records, before they
are deployed. Each input line is decoded as its source would decode it (a request body for
HTTP, a JSON line for TCP), then the rules run on it as the sink would run them, and one JSON
line says what it became."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

import click
import orjson

from archiver.app.config import ConfigError, load_config
from archiver.format.record import Context, Rejected, valid_stream_name
from archiver.ingest.decode.jsonbody import decode_lines
from archiver.ingest.decode.result import DecodeError, Decoded
from archiver.ingest.decode.sniff import decode_body
from archiver.ingest.rule import KEPT
from archiver.ingest.rules import RULE_SOURCES, RuleSet


@click.group("rules")
def rules_group() -> None:
    """Rules at ingest ([[rules]] in the config)."""


@rules_group.command("test")
@click.option("-c", "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), required=True,
              envvar="ARCHIVER_CONFIG", help="TOML config file with the [[rules]] to try.")
@click.option("--source", type=click.Choice(RULE_SOURCES), default="http", show_default=True,
              help="The source the records are taken to arrive on.")
@click.option("--stream", default=None, help="The stream they are sent to (default: 'default' for http, "
              "tcp.stream for tcp).")
def rules_test(config_path: Path, source: str, stream: str | None) -> None:
    """Read records (a JSON object or a urlencoded form a line) on stdin; print for each, as a JSON line, the
    rules that matched and the record as it would be written, or the rule that dropped it.
    Exits 1 when the config is invalid."""
    try:
        config = load_config(config_path)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    stream = stream or (config.tcp.stream if source == "tcp" else "default")
    if not valid_stream_name(stream):
        raise click.BadParameter(f"{stream!r} is not a valid stream name", param_hint="--stream")
    out = sys.stdout.buffer
    for outcome in trace(RuleSet(config.rules), sys.stdin.buffer, source, stream):
        out.write(orjson.dumps(outcome, option=orjson.OPT_APPEND_NEWLINE))
    out.flush()


def trace(rules: RuleSet, lines: BinaryIO, source: str, stream: str) -> Any:
    """For each non-blank line: its number, the rules that matched, and the record written
    (``record``), the rule that dropped it (``dropped_by``) or why it is no record (``rejected``,
    with its bytes as the sink would keep them)."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        decoded = _decode(line, source, Context(stream, None, time.time()))
        for item in rules.redact_rejected(decoded.rejected):
            yield {"line": number, "rejected": item.reason, "raw": item.raw.decode("utf-8", "replace")}
        for record in decoded.records:
            matched: list[str] = []
            index = rules.apply(record, source, matched)
            outcome: dict[str, Any] = {"line": number, "matched": matched}
            if index == KEPT:
                outcome["record"] = record
            else:
                outcome["dropped_by"] = rules.rules[index].label
            yield outcome


def _decode(line: bytes, source: str, ctx: Context) -> Decoded:
    if source == "tcp":
        return decode_lines(line, ctx)
    try:
        return decode_body(line.rstrip(b"\r\n"), ctx)
    except DecodeError as err:
        return Decoded("http", rejected=[Rejected(str(err), line)])
