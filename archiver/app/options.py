"""The options several commands share (config, data dir, archive, times, secrets given as
``@FILE``) and what they turn into: one place, so every command reads them alike."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import click
from click.core import ParameterSource

from archiver.app.archives import config_archive, open_archive
from archiver.app.config import Config, ConfigError, load_config
from archiver.common.redaction import redact
from archiver.common.units import parse_time
from archiver.format.manifest import ManifestError
from archiver.read.reader import Archive

ARCHIVE_ENV = "ARCHIVER_ARCHIVE"


class CouldNotRun(click.ClickException):
    """The command could not do its work at all (no manifest, the store out of reach): a status
    of its own, so a cron job tells it from the problems a check found (1)."""

    exit_code = 3


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``-c/--config`` and ``--data-dir``, passed as ``config_path`` and ``data_dir``."""
    func = click.option("--data-dir", type=click.Path(path_type=Path), help="Data dir (overrides the config).")(func)
    func = click.option(
        "-c", "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
        envvar="ARCHIVER_CONFIG", help="TOML config file (default: none, built-in defaults).",
    )(func)
    return func


def secret_value(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``@FILE`` stands for the first line of FILE: a root cap given so stays out of ``ps`` and
    shell history."""
    if value is None or not value.startswith("@"):
        return value
    try:
        text = Path(value[1:]).expanduser().read_text().strip()
    except OSError as err:
        raise click.BadParameter(f"cannot read {value[1:]}: {err.strerror}") from None
    if not text:
        raise click.BadParameter(f"{value[1:]} is empty")
    return text.splitlines()[0].strip()


def archive_option(help_text: str, required: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--archive``, which may be a secret (a root cap): ``@FILE`` and $ARCHIVER_ARCHIVE."""
    return click.option(
        "--archive", envvar=ARCHIVE_ENV, callback=secret_value, required=required,
        help=f"{help_text} @FILE reads it from FILE; ${ARCHIVE_ENV} sets it too, out of sight of ps.",
    )


def load(config_path: Path | None, overrides: dict[str, Any]) -> Config:
    """The config with the command's overrides; a bad one is a usage error (status 2)."""
    try:
        return load_config(config_path, os.environ, overrides)
    except ConfigError as err:
        raise click.UsageError(str(err)) from None


def chosen_archive(
    config_path: Path | None, data_dir: Path | None, archive: str | None = None,
    failure: type[click.ClickException] = click.ClickException,
) -> Archive:
    """The archive named by --archive (a config, a data dir or a store URL), else the one the
    config describes (its store and store.shares_happy included; --data-dir wins). $ARCHIVER_ARCHIVE
    stands in for --archive unless --data-dir or --config is on the command line. An archive
    that cannot be opened raises ``failure``."""
    from archiver.store.base import StoreError

    ctx = click.get_current_context()
    if archive and ctx.get_parameter_source("archive") is ParameterSource.ENVIRONMENT:
        if data_dir is not None or ctx.get_parameter_source("config_path") is ParameterSource.COMMANDLINE:
            archive = None
    try:
        if archive:
            return open_archive(archive)
        return config_archive(load(config_path, {"data_dir": data_dir}))
    except ConfigError as err:
        raise click.UsageError(str(err)) from None
    except (FileNotFoundError, StoreError, ManifestError) as err:
        raise failure(redact(str(err))) from None


def time_option(value: str | None) -> str | None:
    """--since/--until as an ISO-8601 time, ages counted from now; a bad one is a usage error."""
    if value is None:
        return None
    try:
        return parse_time(value, time.time())
    except ValueError as err:
        raise click.BadParameter(str(err)) from None
