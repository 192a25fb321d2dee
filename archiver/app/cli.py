"""The ``archiver`` command: serve, ls, cat. Exit codes: 0 ok, 1 failure, 2 usage."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import click
import orjson

from archiver import __version__
from archiver.app.logs import configure_logging
from archiver.app.options import CouldNotRun, archive_option, chosen_archive, config_options, load, secret_value, time_option
from archiver.app.sinks import ask_sink, running_sink
from archiver.common.redaction import redact
from archiver.format.manifest import ManifestError
from archiver.format.subset import Subset
from archiver.read.classic import classic_line
from archiver.read.reader import Archive, Checked, Filters


class _LazyGroup(click.Group):
    """The commands in modules of their own are imported only when they run (or for the
    group's help): their imports (the server, aiohttp, the web site) cost every other
    command's start, and the tests run the CLI as a process hundreds of times."""

    LAZY = {
        "import": "archiver.app.import_command:import_command",
        "replay": "archiver.app.replay_command:replay_command",
        "rules": "archiver.app.rules_command:rules_group",
        "web": "archiver.app.web_command:web_command",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.LAZY:
            return super().get_command(ctx, cmd_name)
        module, name = self.LAZY[cmd_name].split(":")
        command: click.Command = getattr(importlib.import_module(module), name)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="archiver")
def main() -> None:
    """archiver: an archiving log sink (HTTP/TCP in, durable JSON-lines segments out)."""


@main.command("serve")
@config_options
@click.option("--host", help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, help="HTTP port (default 8000; 0 picks a free one).")
@click.option("--tcp-port", type=int, help="Also listen for JSON lines on this TCP port (0 picks a free one).")
@click.option("--workers", type=int, help="Ingest processes sharing the ports (server.workers, default 1).")
@click.option("--store", "store_url", callback=secret_value,
              help="Where sealed segments go: embedded, tahoe://HOST:PORT[/CAP], osfs://DIR; @FILE reads it from FILE.")
def serve_command(
    config_path: Path | None, data_dir: Path | None, host: str | None, port: int | None, tcp_port: int | None,
    workers: int | None, store_url: str | None,
) -> None:
    """Receive records over HTTP (and TCP) and append them durably to segments."""
    overrides: dict[str, Any] = {"data_dir": data_dir, "server.host": host, "server.port": port, "store.url": store_url,
                                 "server.workers": workers}
    if tcp_port is not None:
        overrides.update({"tcp.enabled": True, "tcp.port": tcp_port})
    config = load(config_path, overrides)
    configure_logging(config.log_level, config.log_format)
    from archiver.app.service import ServiceError, serve  # the server's imports cost the reading commands time

    try:
        asyncio.run(serve(config))
    except ServiceError as err:
        click.echo(f"archiver: {err}", err=True)
        sys.exit(1)


def _filter_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            archive_option("A config, a data dir, or a store URL with a root cap (tahoe://HOST:PORT/URI:DIR2-RO:...)."),
            click.option("--stream", help="Only this stream."),
            click.option("--since", help="From this time, inclusive: ISO-8601, a year or month (2024, 2024-05), or an age (15m, 2h, 7d)."),
            click.option("--until", help="Before this time, exclusive: ISO-8601, a year or month, or an age."),
            click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
        ]
    ):
        func = option(func)
    return func


@main.command("ls")
@config_options
@_filter_options
def ls_command(
    config_path: Path | None, data_dir: Path | None, archive: str | None, stream: str | None, since: str | None,
    until: str | None, as_json: bool,
) -> None:
    """List sealed segments (answered from the manifest; nothing is read)."""
    rows = chosen_archive(config_path, data_dir, archive).segments(stream, time_option(since), time_option(until))
    if as_json:
        _emit(iter([orjson.dumps([row.__dict__ for row in rows], option=orjson.OPT_INDENT_2) + b"\n"]))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("segment", "stream", "records", "first ts", "last ts", "stored", "state", box=None)
    for row in rows:
        table.add_row(
            row.id, row.stream, str(row.records), row.first_ts or "-", row.last_ts or "-",
            _human_bytes(row.stored_bytes), row.state,
        )
    # A pipe gets full-width rows instead of rich's 80-column truncation.
    Console(width=None if sys.stdout.isatty() else 240).print(table)


@main.command("cat")
@config_options
@_filter_options
@click.option("--level", help="Minimum level (ERROR also shows CRITICAL); other names match exactly.")
@click.option("--logger", "logger_glob", help="Logger name glob, e.g. 'app.db.*'.")
@click.option("--grep", "contains", help="Only records whose message contains this text.")
@click.option("--include-open", is_flag=True, help="Also read segments still being written.")
@click.option("--follow", "-f", is_flag=True, help="Then keep printing records as the running sink makes them durable.")
def cat_command(
    config_path: Path | None, data_dir: Path | None, archive: str | None, stream: str | None, since: str | None,
    until: str | None, as_json: bool, level: str | None, logger_glob: str | None, contains: str | None,
    include_open: bool, follow: bool,
) -> None:
    """Print records: the classic one-line form, or JSON lines with --json."""
    from archiver.store.base import StoreError

    source = chosen_archive(config_path, data_dir, archive)
    query = Filters(stream, time_option(since), time_option(until), level, logger_glob, contains)
    try:
        if follow:
            from archiver.app.follow_command import follow_chunks

            if source.data_dir is None:
                raise click.UsageError("--follow reads a running sink's data dir: give --data-dir or --config")
            root = source.data_dir.root
            _emit(follow_chunks(source, query, as_json, lambda: ask_sink(config_path, root, "GET", "/_durable", 10)["open"]))
        elif as_json:
            _emit(source.json_chunks(query, include_open))
        else:
            _emit(classic_line(record).encode() for record in source.records(**query.__dict__, include_open=include_open))
    except (StoreError, OSError) as err:  # a segment gone from disk and store; _emit handles a closed pipe
        raise click.ClickException(redact(str(err))) from None


def _subset_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Subset | None:
    try:
        return None if value is None else Subset.parse(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _checked_lines(checked: Checked) -> None:
    """A segment's JSON line as soon as it is checked (a line per problem when it has more than
    one), flushed, for whatever follows a long run."""
    check = "read" if checked.read else "quick"
    lines = [{"segment": checked.segment, "check": check, "ok": False, "where": p.where, "problem": p.problem}
             for p in checked.problems]
    lines = lines or [{"segment": checked.segment, "check": check, "ok": True, "where": None, "problem": None}]
    _emit(orjson.dumps(line) + b"\n" for line in lines)


def _nothing(checked: Checked) -> None:
    """Human output lists the problems at the end."""


@main.command("verify")
@config_options
@archive_option("A config, a data dir, or a store URL with a root cap.")
@click.option("--read-data-subset", "subset", metavar="N/T|x%", callback=_subset_option,
              help="Read back only part N of T (each segment is in one part, by its id: parts 1 to T read "
                   "everything once), or a random x% of the segments.")
@click.option("--quick", is_flag=True,
              help="Read no data: the size of each copy, and on Tahoe t=check without verify (shares present, "
                   "happiness). With --read-data-subset: the segments outside the subset.")
@click.option("--repair", is_flag=True, help="Ask Tahoe to repair unhealthy segments while checking.")
@click.option("--expect-head", metavar="SHA256", multiple=True,
              help="Fail unless a sink's published manifest chain still passes through this hash (a head seen "
                   "before: see docs/format.md). Repeatable.")
@click.option("--json", "as_json", is_flag=True,
              help="A JSON line per segment as it is checked (segment, check, ok, where, problem), then a summary "
                   "line (checked, ok, problems, chains).")
def verify_command(
    config_path: Path | None, data_dir: Path | None, archive: str | None, subset: Subset | None, quick: bool,
    repair: bool, expect_head: tuple[str, ...], as_json: bool,
) -> None:
    """Check every segment: local and stored copies against their sha256, grid health.

    \b
    Exit status: 0 all good; 1 a segment missing, corrupt or unhealthy; 2 bad arguments;
    3 could not check (no manifest, the store out of reach)."""
    from archiver.store.base import StoreError

    source = chosen_archive(config_path, data_dir, archive, failure=CouldNotRun)
    try:
        with source:
            report = source.verify(repair=repair, quick=quick, subset=subset, on_checked=_checked_lines if as_json else _nothing)
            chains = _check_chains(source, report, expect_head)
    except (StoreError, OSError) as err:
        raise CouldNotRun(redact(str(err))) from None
    if as_json:
        summary = {"checked": report.checked, "ok": report.ok, "subset": subset and str(subset), "quick": quick,
                   "chains": chains, "problems": [p.__dict__ for p in report.problems]}
        _emit(iter([orjson.dumps(summary) + b"\n"]))
    else:
        for problem in report.problems:
            click.echo(f"{problem.segment}  {problem.where}: {problem.problem}")
        for chain in chains:
            click.echo(f"manifest chain of {chain['sink_id']}: {chain['files']} file(s), head {chain['head']}")
        click.echo(f"{report.checked} segment(s) checked, {len(report.problems)} problem(s)")
    if not report.ok:
        sys.exit(1)


def _check_chains(source: Archive, report: Any, expect_head: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each sink's published manifest chain (format 2), checked from the store when the archive
    is read from a store root (an auditor's read cap) or a head is pinned: a file missing,
    reordered, altered or added is a problem, and so is a pinned head the chain no longer
    passes through."""
    from archiver.read.published import check_published_chains
    from archiver.read.reader import Problem

    if source.data_dir is not None and not expect_head:
        return []
    store = source.store
    if store is None:
        return []
    checks = check_published_chains(store)
    for check in checks:
        report.problems += [Problem(f"_manifest/{check.sink_id}", "manifest", problem) for problem in check.problems]
    for head in expect_head:
        if not any(head in check.passes for check in checks):
            report.problems.append(Problem("_manifest", "manifest", f"no chain passes through the expected head {head}"))
    return [{"sink_id": check.sink_id, "files": check.files, "head": check.head} for check in checks]


@main.command("restore")
@click.argument("dest", type=click.Path(path_type=Path, file_okay=False))
@config_options
@archive_option("A config, a data dir, or a store URL with a root cap.")
@click.option("--stream", help="Only this stream.")
@click.option("--since", help="From this time, inclusive: ISO-8601, a year or month (2024, 2024-05), or an age (15m, 2h, 7d).")
@click.option("--until", help="Before this time, exclusive: ISO-8601, a year or month, or an age.")
def restore_command(
    dest: Path, config_path: Path | None, data_dir: Path | None, archive: str | None, stream: str | None,
    since: str | None, until: str | None,
) -> None:
    """Copy matching segments byte for byte into DEST (checked against their sha256).
    On a terminal, a progress bar (bytes, speed, ETA) and a summary; otherwise quiet."""
    from archiver.store.base import StoreError

    source = chosen_archive(config_path, data_dir, archive)
    start, end = time_option(since), time_option(until)
    total = sum(row.stored_bytes for row in source.segments(stream, start, end))
    # The bar and the summary go to stderr, so that is the stream that must be a terminal:
    # under cron, in a pipeline or with 2>log, success prints nothing and the exit status tells.
    interactive = sys.stderr.isatty()
    try:
        if interactive:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

            columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
            with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task("restore", total=total)
                restored = source.restore(dest, stream, start, end, progress=lambda n: bar.advance(task, n))
        else:
            restored = source.restore(dest, stream, start, end)
    except (StoreError, OSError, ValueError) as err:
        raise click.ClickException(redact(str(err))) from None
    if interactive:
        click.echo(f"restored {len(restored)} segment(s), {_human_bytes(total)} into {dest}", err=True)


def _emit(chunks: Iterator[bytes]) -> None:
    """Write to stdout; a closed pipe (``| head``) ends the command quietly with status 0."""
    out = sys.stdout.buffer
    try:
        for chunk in chunks:
            out.write(chunk)
        out.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _local_only(seconds: float) -> str:
    """How long losing this host would lose acknowledged records, in words."""
    if not seconds:
        return "nothing (every acknowledged record is in the store)"
    return f"records acknowledged up to {seconds:.0f} s ago (open or not yet uploaded)"


@main.command("flush")
@config_options
def flush_command(config_path: Path | None, data_dir: Path | None) -> None:
    """Seal open segments and upload now, on the running sink; returns when done."""
    result = ask_sink(config_path, data_dir, "POST", "/_admin/flush", timeout=3600)
    click.echo(f"uploaded {result['uploaded']}, failed {result['failed']}, backlog {result['backlog']}")
    if result["failed"]:
        sys.exit(1)


@main.command("status")
@config_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(config_path: Path | None, data_dir: Path | None, as_json: bool) -> None:
    """The running sink: streams, segments by state, backlog, last upload and error, grid."""
    status = ask_sink(config_path, data_dir, "GET", "/_status", timeout=60)
    if as_json:
        _emit(iter([orjson.dumps(status, option=orjson.OPT_INDENT_2) + b"\n"]))
        return
    store = status.get("store") or {}
    segments = status["segments"]
    lines = [
        f"archiver {status['sink_id']} (pid {status['pid']}) on {status['http']}",
        f"streams: {', '.join(status['streams'] + [s for s in status['open'] if s not in status['streams']]) or '-'}",
        f"segments: {len(status['open'])} open, " + ", ".join(f"{n} {state}" for state, n in segments.items()),
        f"backlog: {_human_bytes(status['backlog_bytes'])}; spool {_human_bytes(status['spool_bytes'])}",
        f"on this host only: {_local_only(status['local_only_oldest_seconds'])}",
        f"last upload: {status['last_upload'] or '-'}",
        f"last error: {status['last_error'] or '-'}",
        *([f"dropped by rules: {', '.join(f'{rule} {n}' for rule, n in dropped.items())}"]
          if (dropped := status.get("dropped_by_rule")) else []),
        *[f"NOT SEALED: {f['stream']}/{f['segment']} in {f['path']} ({f['attempts']} attempt(s)): {f['error']}"
          for f in status.get("seal_failed", [])],
        f"store: {store.get('url') or '-'}; servers connected: {store.get('servers_connected')}",
        f"root read cap: {store.get('root_read_cap') or '-'}",
        *([f"leases: {leases['objects']} object(s), {leases['due']} due, oldest renewal "
             f"{leases['oldest_renewal'] or '-'}"] if (leases := status.get("leases")) else []),
    ]
    click.echo("\n".join(lines))


@main.group("leases")
def leases_group() -> None:
    """Tahoe leases: what keeps the archive on a grid that collects garbage."""


@leases_group.command("renew")
@config_options
@archive_option("A store URL with a root cap (a read cap is enough): renew all that is reachable from it.")
def leases_renew(config_path: Path | None, data_dir: Path | None, archive: str | None) -> None:
    """Renew the lease on every file and directory now (the sink renews them on a rolling
    schedule by itself). With --archive, everything reachable from the root cap, with no data
    dir: a cron job on any host keeps an archive alive after its sink is retired. Exits 1
    when any renewal failed."""
    from archiver.store.base import LeaseRenewal, StoreError

    source = chosen_archive(config_path, data_dir, archive)
    store = source.store
    if not isinstance(store, LeaseRenewal):
        raise click.ClickException("this store keeps no leases (only a Tahoe grid does): nothing to renew")
    interactive = sys.stderr.isatty()
    try:
        if source.data_dir is None:
            renewed = _renew_reachable(store, interactive)
            failed = 0
        else:
            renewed, failed = _renew_known(source.data_dir, store, interactive)
    except (StoreError, OSError) as err:
        raise click.ClickException(redact(str(err))) from None
    click.echo(f"renewed the leases of {renewed} object(s), {failed} failed")
    if failed:
        sys.exit(1)


def _renew_reachable(store: Any, interactive: bool) -> int:
    """Every object reachable from the root, by one deep check with add-lease."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn

    count = 0
    with Progress(SpinnerColumn(), TextColumn("{task.completed} renewed"), console=Console(stderr=True),
                  transient=True, disable=not interactive) as bar:
        task = bar.add_task("leases", total=None)
        for _ in store.renew_leases_deep("/"):
            count += 1
            bar.advance(task)
    return count


def _renew_known(data_dir: Any, store: Any, interactive: bool) -> tuple[int, int]:
    """Every object the data dir's manifest knows, each by its own cap."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from archiver.format.manifest import Manifest
    from archiver.ship.leases import LeaseRenewer

    manifest = Manifest(data_dir.root)
    try:
        renewer = LeaseRenewer(data_dir, manifest.get_meta("sink_id") or "", lambda: store)
        total = len(renewer.targets(manifest))
    finally:
        manifest.close()
    with Progress(BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                  transient=True, disable=not interactive) as bar:
        task = bar.add_task("leases", total=total)
        result = renewer.renew_all(progress=lambda target: bar.advance(task))
    return result["renewed"], result["failed"]


@main.command("forget")
@config_options
@click.option("--dry-run", is_flag=True, help="Only list what the retention policy drops.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def forget_command(config_path: Path | None, data_dir: Path | None, dry_run: bool, as_json: bool) -> None:
    """Forget the segments [retention] drops: list them, unlink each from the store, delete its
    local copy and mark it forgotten in the manifest. With the sink running or not; on Tahoe the
    space comes back only when the shares' leases expire. Exits 1 when a removal failed."""
    from archiver.format.manifest import Manifest
    from archiver.read.reader import existing_data_dir
    from archiver.ship.forget import dropped
    from archiver.ship.retention import RetentionPolicy
    from archiver.store.base import StoreError

    config = load(config_path, {"data_dir": data_dir})
    retention = config.retention
    policy = RetentionPolicy(retention.keep, retention.streams, retention.min_segments)
    try:
        data = existing_data_dir(config.data_dir)
        manifest = Manifest(data.root)
    except (FileNotFoundError, ManifestError) as err:
        raise click.ClickException(str(err)) from None
    try:
        segments = dropped(manifest, policy, time.time())
        sink_id = manifest.get_meta("sink_id") or ""
        url = config.store.url if config.store.url not in ("", "embedded") else manifest.get_meta("store_url")
        root_cap = manifest.get_meta("root_write_cap")
    finally:
        manifest.close()
    listing = [
        {"stream": s.row.stream, "segment": s.row.id, "last_ts": s.row.last_ts, "stored_bytes": s.row.stored_bytes,
         "state": s.row.state, "reason": s.reason}
        for s in segments
    ]
    result: dict[str, Any] = {"dry_run": dry_run, "segments": listing}
    if not dry_run:
        try:
            result.update(_forget(data, sink_id, url, root_cap, segments, running=running_sink(config_path, data_dir) is not None))
        except StoreError as err:
            raise click.ClickException(redact(str(err))) from None
    if as_json:
        _emit(iter([orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n"]))
    else:
        _print_forget(result)
    if result.get("failed"):
        sys.exit(1)


def _forget(data: Any, sink_id: str, url: str | None, root_cap: str | None, segments: list[Any], running: bool) -> dict[str, Any]:
    """Forget ``segments`` in ``data`` and its store; then publish, unless a sink runs there:
    two publishers would race, and the sink publishes with its next upload."""
    from archiver.ship.forget import Forgetter
    from archiver.ship.uploader import Uploader, UploadSettings
    from archiver.store import open_store

    store = open_store(url, root_cap=root_cap, create=False) if url else None  # a moved store is not remade empty
    published = False
    try:
        result = Forgetter(data, store).forget(segments)
        if store is not None and (result["forgotten"] or result["removed"]) and not running:
            publish_to = store
            Uploader(data, sink_id, lambda: publish_to, UploadSettings()).publish()
            published = True
    finally:
        if store is not None:
            store.close()
    return {**result, "published": published}


def _print_forget(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("stream", "segment", "last record", "stored", "why", box=None)
    for entry in result["segments"]:
        table.add_row(entry["stream"], entry["segment"], entry["last_ts"] or "-", _human_bytes(entry["stored_bytes"]),
                      entry["reason"])
    console = Console(width=None if sys.stdout.isatty() else 240)
    if result["segments"]:
        console.print(table)
    if result["dry_run"]:
        console.print(f"would forget {len(result['segments'])} segment(s) (dry run: nothing changed)")
        return
    console.print(f"forgot {result['forgotten']} segment(s); removed {result['removed']}, {result['failed']} failed")
    if result["forgotten"]:
        console.print("the published manifest no longer lists them" if result["published"] else
                      "the published manifest drops them at the sink's next publish")


@main.group("manifest")
def manifest_group() -> None:
    """The manifest of segments and directory caps."""


@manifest_group.command("export")
@config_options
@click.option("--include-write-caps", is_flag=True, help="Also print write caps: the keys to the data.")
def manifest_export(config_path: Path | None, data_dir: Path | None, include_write_caps: bool) -> None:
    """Print the manifest as JSON (read caps only unless asked)."""
    from archiver.format.manifest import Manifest

    config = load(config_path, {"data_dir": data_dir})
    if not (config.data_dir / Manifest.FILENAME).exists():
        raise click.ClickException(f"{config.data_dir} is not an archiver data dir")
    manifest = Manifest(config.data_dir)
    try:
        document = manifest.document(include_write_caps=include_write_caps)
    finally:
        manifest.close()
    _emit(iter([orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"]))


@manifest_group.command("rebuild")
@config_options
@archive_option("The store URL with the root cap (a read cap is enough).", required=True)
@click.option("--sink-id", help="Whose manifest, when several sinks share the root.")
@click.option("--walk", is_flag=True,
              help="Also walk the whole tree for the sink's segments its published manifest does not list "
                   "(uploaded after its last publish) and read each back.")
def manifest_rebuild(config_path: Path | None, data_dir: Path | None, archive: str, sink_id: str | None,
                     walk: bool) -> None:
    """Rebuild a lost data dir's manifest from the published manifests, else by reading the tree."""
    from archiver.read.rebuild import RebuildError, rebuild_manifest
    from archiver.store import open_store
    from archiver.store.base import StoreError

    config = load(config_path, {"data_dir": data_dir})
    try:
        result = rebuild_manifest(config.data_dir, open_store(archive, create=False), sink_id, walk)
    except (RebuildError, StoreError, ManifestError) as err:
        raise click.ClickException(redact(str(err))) from None
    click.echo(f"rebuilt {result['segments']} segment(s) of sink {result['sink_id']} from the {result['source']}")


@main.group("grid")
def grid_group() -> None:
    """A local Tahoe-LAFS grid (introducer + storage nodes on 127.0.0.1)."""


def _grid_call(action: Callable[[], Any]) -> Any:
    from archiver.app.grid import GridError

    try:
        return action()
    except GridError as err:
        raise click.ClickException(str(err)) from None


def _grid_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "-c", "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
        envvar="ARCHIVER_CONFIG", help="TOML config file (for grid.tahoe).",
    )(func)
    return click.argument("directory", type=click.Path(path_type=Path, file_okay=False))(func)


def _open_grid(directory: Path, config_path: Path | None) -> Any:
    from archiver.app.grid import LocalGrid

    tahoe = load(config_path, {}).grid.tahoe or None
    return _grid_call(lambda: LocalGrid(directory, tahoe))


@grid_group.command("create")
@_grid_options
@click.option("--nodes", default=1, show_default=True, help="Storage nodes.")
@click.option("--needed", type=int, help="Shares needed to read (K). Default: half the total, rounded up.")
@click.option("--happy", type=int, help="Servers an upload must reach. Default: min(nodes, total).")
@click.option("--total", type=int, help="Shares written (N). Default: --nodes.")
@click.option("--start/--no-start", default=False, help="Start the grid once created.")
def grid_create(
    directory: Path, config_path: Path | None, nodes: int, needed: int | None, happy: int | None,
    total: int | None, start: bool,
) -> None:
    """Create an introducer and storage nodes in DIRECTORY."""
    from archiver.app.grid import LocalGrid

    tahoe = load(config_path, {}).grid.tahoe or None
    grid = _grid_call(
        lambda: LocalGrid.create(directory, nodes=nodes, needed=needed, happy=happy, total=total, tahoe=tahoe)
    )
    click.echo(f"created {nodes} storage node(s), {grid.spec.needed}-of-{grid.spec.total}, happy {grid.spec.happy}; gateway {grid.gateway_url}")
    if start:
        _grid_call(grid.start)
        click.echo("started")


@grid_group.command("start")
@_grid_options
def grid_start(directory: Path, config_path: Path | None) -> None:
    """Start the grid's nodes and wait until uploads can succeed."""
    grid = _open_grid(directory, config_path)
    _grid_call(grid.start)
    click.echo(f"grid up: {grid.servers_connected()} storage server(s) connected; web UI {grid.gateway_url}")


@grid_group.command("stop")
@_grid_options
def grid_stop(directory: Path, config_path: Path | None) -> None:
    """Stop every node of the grid (by PID)."""
    _grid_call(_open_grid(directory, config_path).stop)
    click.echo("grid stopped")


@grid_group.command("status")
@_grid_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def grid_status(directory: Path, config_path: Path | None, as_json: bool) -> None:
    """Nodes, PIDs, ports and connected servers."""
    status = _grid_call(_open_grid(directory, config_path).status)
    if as_json:
        _emit(iter([orjson.dumps(status, option=orjson.OPT_INDENT_2) + b"\n"]))
        return
    encoding = status["encoding"]
    click.echo(f"grid {status['dir']}: {encoding['needed']}-of-{encoding['total']}, happy {encoding['happy']}")
    click.echo(f"gateway {status['gateway']}: {status['servers_connected']} storage server(s) connected")
    for node in status["nodes"]:
        state = f"running (pid {node['pid']})" if node["pid"] else "stopped"
        click.echo(f"  {node['name']:<12} {state:<22} tub {node['tub_port']}  web {node['web_port'] or '-'}")

