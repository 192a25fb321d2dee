"""``archiver replay``: send archived records, in time order, to another sink."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import click
import orjson

from archiver.app.options import CouldNotRun, archive_option, chosen_archive, config_options, secret_value, time_option
from archiver.app.replay import ReplaySettings, replay
from archiver.app.replay_send import FORMATS, TargetRefused, open_sender
from archiver.common.redaction import redact
from archiver.read import checkpoint as checkpoints
from archiver.read.reader import Filters


def default_resume_file(query: str) -> Path:
    """One file per replay (archive, target, filters) under the user's state dir."""
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "archiver" / "replay" / f"{query[:16]}.json"


def _query_digest(asked: dict[str, Any]) -> str:
    """A digest, not the values: the archive and target may carry caps or passwords."""
    return hashlib.sha256(orjson.dumps(asked, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _on_retry(attempt: int, why: str, delay: float) -> None:
    click.echo(f"archiver replay: target unavailable ({redact(why)}); try {attempt + 1} in {delay:.1f} s", err=True)


@click.command("replay")
@config_options
@archive_option("A config, a data dir, or a store URL with a root cap (tahoe://HOST:PORT/URI:DIR2-RO:...).")
@click.option("--to", "target", required=True,
              help="http://HOST:PORT/STREAM (NDJSON batches: another archiver, or any NDJSON receiver) or "
                   "tcp://HOST:PORT (syslog over TCP, see --format).")
@click.option("--token", envvar="ARCHIVER_REPLAY_TOKEN", callback=secret_value,
              help="Bearer token for an http:// target with [auth]; @FILE reads it from FILE, and "
                   "$ARCHIVER_REPLAY_TOKEN sets it out of sight of ps.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="rfc5424", show_default=True,
              help="For tcp://: RFC 5424 messages, octet-counted (RFC 6587), or JSON lines.")
@click.option("--stream", help="Only this stream.")
@click.option("--since", help="From this time, inclusive: ISO-8601, a year or month (2024, 2024-05), or an age (15m, 2h, 7d).")
@click.option("--until", help="Before this time, exclusive: ISO-8601, a year or month, or an age.")
@click.option("--level", help="Minimum level (ERROR also sends CRITICAL); other names match exactly.")
@click.option("--logger", "logger_glob", help="Logger name glob, e.g. 'app.db.*'.")
@click.option("--grep", "contains", help="Only records whose message contains this text.")
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True,
              help="Records per HTTP request (per write on TCP).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="At most this many records a second.")
@click.option("--resume-file", type=click.Path(path_type=Path, dir_okay=False),
              help="Where the position is kept (default: one file per replay under $XDG_STATE_HOME/archiver/replay).")
def replay_command(
    config_path: Path | None, data_dir: Path | None, archive: str | None, target: str, token: str | None, fmt: str,
    stream: str | None, since: str | None, until: str | None, level: str | None, logger_glob: str | None,
    contains: str | None, batch_size: int, rate: float | None, resume_file: Path | None,
) -> None:
    """Send archived records in time order to another sink, resuming where an interrupted run
    stopped (the same command again). A target that does not answer is retried with backoff.

    \b
    Exit status: 0 all sent; 1 the target refused a batch; 2 bad arguments; 3 could not read
    the archive."""
    from archiver.store.base import StoreError

    try:
        sender = open_sender(target, fmt, token)
    except ValueError as err:
        raise click.BadParameter(redact(str(err)), param_hint="--to") from None
    asked = {"archive": archive, "data_dir": data_dir and str(data_dir.resolve()),
             "config": config_path and str(config_path.resolve()), "to": target, "format": fmt, "stream": stream,
             "since": since, "until": until, "level": level, "logger": logger_glob, "grep": contains}
    query = _query_digest(asked)
    path = resume_file or default_resume_file(query)
    try:
        position = checkpoints.load(path, query)
    except checkpoints.CheckpointError as err:
        raise click.UsageError(str(err)) from None
    if position is None:
        position = checkpoints.Checkpoint(query, time_option(since), time_option(until))
    elif position.complete:
        click.echo(f"nothing to send: this replay completed ({position.sent} record(s)); remove {path} to replay again",
                   err=True)
        return
    source = chosen_archive(config_path, data_dir, archive, failure=CouldNotRun)
    wanted = Filters(stream, position.since, position.until, level, logger_glob, contains)
    save = lambda done: checkpoints.save(path, done)  # noqa: E731
    try:
        with source:
            sent = replay(source, wanted, sender, position, save, ReplaySettings(batch_size, rate), _on_retry)
    except TargetRefused as err:
        raise click.ClickException(f"the target refused a batch: {redact(str(err))}; {position.sent} record(s) "
                                   f"sent before it, position kept in {path}") from None
    except (StoreError, OSError) as err:
        raise CouldNotRun(redact(str(err))) from None
    finally:
        sender.close()
    click.echo(f"replayed {sent} record(s) ({position.sent} in all) to {redact(target)}", err=True)
