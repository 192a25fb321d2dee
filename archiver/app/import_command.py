"""``archiver import``: back up existing log files into the archive, resumably."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from archiver.app.importing import ImportFailed, import_target
from archiver.app.options import config_options, load
from archiver.app.sinks import credentials, running_sink
from archiver.format.record import valid_stream_name
from archiver.ingest.decode.imported import FORMATS
from archiver.ingest.decoder import Decoder
from archiver.ingest.files import READ_ERRORS, LogFile, walk
from archiver.ingest.importer import FileResult, Summary, import_file
from archiver.spool.imports import SpoolFull

SINK_WAIT = 10.0  # seconds a sink that holds the lock may take to write sink.json


@click.command("import")
@config_options
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--stream", default="import", show_default=True, help="Stream the records go to.")
@click.option("--format", "kind", type=click.Choice(["auto", *FORMATS]), default="auto", show_default=True,
              help="How to read the lines; auto decides per file from its first line.")
def import_command(config_path: Path | None, data_dir: Path | None, paths: tuple[Path, ...], stream: str,
                   kind: str) -> None:
    """Import log files (plain, .gz, .zst, .bz2; directories recursively): JSON lines, syslog
    (RFC 5424, RFC 3164) or text. Only what is new since the last import of each file is read,
    so a cron job can run it over the same directory again; a rotated file is recognised by its
    first KiB. Goes through the sink when one runs on the data dir. Exits 1 when a file failed."""
    if not valid_stream_name(stream):
        raise click.BadParameter(f"{stream!r} is not a stream name", param_hint="--stream")
    config = load(config_path, {"data_dir": data_dir})
    files = walk(paths)

    def find_sink() -> str | None:
        deadline = time.monotonic() + SINK_WAIT
        while (sink := running_sink(config_path, data_dir)) is None and time.monotonic() < deadline:
            time.sleep(0.2)  # a sink that took the lock and is still starting
        return None if sink is None else str(sink["http"])

    started = time.monotonic()
    try:
        summary, failed, where = asyncio.run(_run(config, files, stream, kind, find_sink,
                                                  credentials(config_path, data_dir)))
    except (ImportFailed, SpoolFull) as err:
        raise click.ClickException(str(err)) from None
    _print_summary(summary, failed, where, time.monotonic() - started)
    if failed:
        sys.exit(1)


async def _run(config: Any, files: list[LogFile], stream: str, kind: str, find_sink: Any,
               headers: dict[str, str]) -> tuple[Summary, list[tuple[str, str]], str]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    summary = Summary()
    failed: list[tuple[str, str]] = []
    columns = (BarColumn(), MofNCompleteColumn(), TextColumn("files, {task.fields[records]:,} records"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("import", total=len(files), records=0)
        imported = 0

        def advanced(records: int) -> None:
            nonlocal imported
            imported += records
            bar.update(task, records=imported)

        workers = Decoder(os.cpu_count() or 1)
        await workers.start()
        try:
            async with import_target(config, find_sink, headers) as (target, where):
                for file in files:
                    try:
                        result = await import_file(file, target, stream, kind, workers, advanced)
                    except READ_ERRORS as err:
                        failed.append((str(file.path), str(err) or type(err).__name__))
                        result = FileResult(str(file.path), kind, skipped="failed")
                    summary.files.append(result)
                    bar.update(task, advance=1)
        finally:
            await workers.close()
    return summary, failed, where


def _print_summary(summary: Summary, failed: list[tuple[str, str]], where: str, seconds: float) -> None:
    read = [file for file in summary.files if file.records or file.rejected]
    unchanged = sum(1 for file in summary.files if file.skipped in ("nothing new", "empty"))
    via = "into the local spool (the sink uploads it when it next runs)" if where == "local" else f"through the sink at {where}"
    click.echo(f"imported {summary.records:,} record(s) from {len(read)} file(s) {via} in {seconds:.1f} s; "
               f"{summary.rejected:,} line(s) rejected (kept in _rejected); {unchanged} file(s) had nothing new")
    for file in read:
        click.echo(f"  {file.path}: {file.format}, {file.records:,} record(s), {file.rejected:,} rejected, "
                   f"read up to byte {file.offset:,}")
    for file in summary.files:
        if file.stopped:
            click.echo(f"  stopped {file.path}: {file.stopped}", err=True)
    for path, error in failed:
        click.echo(f"  FAILED {path}: {error}", err=True)
