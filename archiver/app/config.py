"""Configuration: TOML file, then ``ARCHIVER_*`` environment, then command-line flags.

Every key lives in a frozen dataclass below with its default; config/archiver.toml documents
each one (a test keeps the two in step). A field's type picks how a value becomes it
(``CONVERTERS``): TOML gives typed values, the environment strings, flags either. Environment
names are ``ARCHIVER_<KEY>`` for top-level keys and ``ARCHIVER_<SECTION>_<KEY>`` for the rest,
e.g. ``ARCHIVER_SEGMENTS_MAX_BYTES=64MiB``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Mapping, get_type_hints

from archiver.app.logs import LOG_FORMATS
from archiver.common.units import parse_duration, parse_size
from archiver.format.layout import SINK_ID, WORKERS_MAX
from archiver.format.record import valid_stream_name
from archiver.format.segment import COMPRESSIONS
from archiver.ingest.rule import Rule
from archiver.ingest.rules import RuleError, compile_rules
from archiver.spool.writer import FSYNC_POLICIES

ENV_PREFIX = "ARCHIVER_"
# ARCHIVER_* variables that are not config keys: the config file itself, the archive the
# reading commands open (cli.py), the tahoe executable (grid.find_tahoe) and test failpoints
# (failpoints.py).
NOT_CONFIG_ENV = {"ARCHIVER_CONFIG", "ARCHIVER_ARCHIVE", "ARCHIVER_TAHOE", "ARCHIVER_FAILPOINTS"}


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


# Field types that take units. To type checkers they are plain int and float; the converter
# table below tells them apart from int and float fields, which take bare numbers.
Size = Annotated[int, "bytes, or a number with a unit: 64MiB, 500kB"]
Duration = Annotated[float, "seconds, or a number with a unit: 250ms, 5m, 7d"]
Keep = Annotated[float, "a duration, or forever (math.inf)"]
StreamKeeps = Annotated[tuple[tuple[str, float], ...], "stream=keep pairs: app=30d, audit=forever"]
Rules = Annotated[tuple[Rule, ...], "[[rules]] tables, compiled (ingest/rules.py)"]


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: Size = 16 * 1024**2
    max_decoded_bytes: Size = 64 * 1024**2
    max_line_bytes: Size = 256 * 1024
    decode_workers: int = 2
    workers: int = 1
    max_connections: int = 1024
    shutdown_timeout: Duration = 30.0
    tls_cert: str = ""
    tls_key: str = ""


@dataclass(frozen=True)
class AuthConfig:
    tokens: tuple[str, ...] = ()
    basic: tuple[str, ...] = ()


@dataclass(frozen=True)
class TcpConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 5170
    stream: str = "tcp"
    stream_field: str = ""
    max_line_bytes: Size = 1024**2


@dataclass(frozen=True)
class SpoolConfig:
    max_bytes: Size = 10 * 1024**3
    fsync: str = "always"
    fsync_interval: Duration = 0.2
    retry_after: Duration = 5.0


@dataclass(frozen=True)
class SegmentsConfig:
    max_bytes: Size = 64 * 1024**2
    max_records: int = 1_000_000
    max_age: Duration = 300.0
    compression: str = "gzip"
    compression_level: int = 6


@dataclass(frozen=True)
class StoreConfig:
    url: str = ""
    shares_happy: int = 1


@dataclass(frozen=True)
class UploaderConfig:
    interval: Duration = 30.0
    publish_delay: Duration = 5.0
    verify_interval: Duration = 60.0
    prune_interval: Duration = 60.0
    keep_local: Duration = 7 * 86400.0
    repair: bool = False
    backoff_base: Duration = 5.0
    backoff_max: Duration = 600.0
    read_back_days: int = 30
    freeze: bool = True
    freeze_after: Duration = 3600.0


@dataclass(frozen=True)
class RetentionConfig:
    lease_renew_every: Duration = 7 * 86400.0
    lease_check_interval: Duration = 3600.0
    keep: Keep = math.inf
    streams: StreamKeeps = ()
    min_segments: int = 1


@dataclass(frozen=True)
class AdminConfig:
    token: str = ""
    trust_loopback: bool = True


@dataclass(frozen=True)
class GridConfig:
    tahoe: str = ""


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("data")
    sink_id: str = ""
    log_level: str = "INFO"
    log_format: str = "text"
    server: ServerConfig = field(default_factory=ServerConfig)
    tcp: TcpConfig = field(default_factory=TcpConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    segments: SegmentsConfig = field(default_factory=SegmentsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    uploader: UploaderConfig = field(default_factory=UploaderConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    rules: Rules = ()


SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "tcp": TcpConfig,
    "auth": AuthConfig,
    "spool": SpoolConfig,
    "segments": SegmentsConfig,
    "store": StoreConfig,
    "uploader": UploaderConfig,
    "retention": RetentionConfig,
    "admin": AdminConfig,
    "grid": GridConfig,
}


def _string(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError("expected a string")
    return raw


def _integer(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise ValueError("expected an integer")
    return int(raw)


def _number(raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ValueError("expected a number")
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _path(raw: Any) -> Path:
    if not isinstance(raw, (str, os.PathLike)):
        raise ValueError("expected a path")
    return Path(raw).expanduser()


def _strings(raw: Any) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
        raise ValueError("expected a list of strings (or, in the environment, comma-separated)")
    return tuple(item.strip() for item in items if item.strip())


def _keep(raw: Any) -> float:
    if isinstance(raw, str) and raw.strip().lower() in ("forever", "inf"):
        return math.inf
    return parse_duration(raw)


def _stream_keeps(raw: Any) -> tuple[tuple[str, float], ...]:
    pairs = []
    for item in _strings(raw):
        stream, equals, keep = item.partition("=")
        if not equals or not valid_stream_name(stream.strip()):
            raise ValueError(f"{item!r} is not stream=keep (e.g. app=30d)")
        pairs.append((stream.strip(), _keep(keep)))
    if len({stream for stream, _ in pairs}) < len(pairs):
        raise ValueError("a stream is named twice")
    return tuple(pairs)


# How a value from TOML (typed), the environment (always a string) or a flag (typed or a string)
# becomes a field's value, keyed by the field's real type. Each raises ValueError or TypeError
# with a message for the user.
CONVERTERS: dict[Any, Callable[[Any], Any]] = {
    str: _string,
    int: _integer,
    float: _number,
    bool: _boolean,
    Path: _path,
    tuple[str, ...]: _strings,
    Size: parse_size,
    Duration: parse_duration,
    Keep: _keep,
    StreamKeeps: _stream_keeps,
    Rules: compile_rules,
}


def field_converters(cls: type) -> dict[str, Callable[[Any], Any]]:
    """The converter of each field of the dataclass ``cls`` (nested sections aside), looked
    up by the field's type. A type with no converter is a TypeError, so a new field of a new
    type fails at import instead of passing raw strings through."""
    hints = get_type_hints(cls, include_extras=True)
    converters: dict[str, Callable[[Any], Any]] = {}
    for spec in dataclasses.fields(cls):
        hint = hints[spec.name]
        if dataclasses.is_dataclass(hint):
            continue
        try:
            converters[spec.name] = CONVERTERS[hint]
        except (KeyError, TypeError):  # TypeError: an unhashable hint
            raise TypeError(f"{cls.__name__}.{spec.name}: no config converter for {hint!r}") from None
    return converters


# Section name ("" for the top level) -> key -> converter.
KEYS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "": field_converters(Config),
    **{name: field_converters(cls) for name, cls in SECTIONS.items()},
}


def load_config(
    path: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Merge defaults < TOML file < environment < ``overrides`` (dotted keys, e.g. ``server.port``).

    Relative ``data_dir`` values in a file are taken relative to the file's directory.
    """
    layers: list[tuple[str, dict[str, Any]]] = []
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        try:
            with open(path, "rb") as handle:
                document = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path} is not valid TOML: {err}") from None
        layers.append((str(path), _flatten(document, str(path))))
        base = path.resolve().parent
    if env is not None:
        layers.append(("environment", _from_env(env)))
    if overrides:
        layers.append(("flags", {key: value for key, value in overrides.items() if value is not None}))

    values: dict[str, dict[str, Any]] = {name: {} for name in KEYS}
    for origin, flat in layers:
        for dotted, raw in flat.items():
            section, _, key = dotted.rpartition(".")
            convert = KEYS.get(section, {}).get(key)
            if convert is None:
                raise ConfigError(f"unknown config key {dotted!r} (from {origin})")
            try:
                value = convert(raw)
            except RuleError as err:  # it names the rule and key; the whole array would bury them
                raise ConfigError(f"{err} (from {origin})") from None
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{dotted} = {raw!r} (from {origin}): {err}") from None
            if key == "data_dir" and origin not in ("environment", "flags"):
                value = base / value
            values[section][key] = value
    sections = {name: cls(**values[name]) for name, cls in SECTIONS.items()}
    config = Config(**values[""], **sections)
    validate(config)
    return config


def _flatten(document: dict[str, Any], origin: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}] must be a table (from {origin})")
            flat.update({f"{key}.{inner}": v for inner, v in value.items()})
        else:
            flat[key] = value
    return flat


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in NOT_CONFIG_ENV:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        for section in SECTIONS:
            if rest.startswith(section + "_"):
                flat[f"{section}.{rest[len(section) + 1:]}"] = value
                break
        else:
            flat[rest] = value
    return flat


def validate(config: Config) -> None:
    """Raise ConfigError for values that parse but cannot work."""
    checks: list[tuple[bool, str]] = [
        (bool(config.server.host), "server.host must not be empty"),
        (0 <= config.server.port <= 65535, "server.port must be 0-65535 (0 picks a free port)"),
        (config.server.max_body_bytes > 0, "server.max_body_bytes must be positive"),
        (
            config.server.max_decoded_bytes >= config.server.max_body_bytes,
            "server.max_decoded_bytes must be at least server.max_body_bytes",
        ),
        (config.server.max_line_bytes >= 8190, "server.max_line_bytes must be at least 8190"),
        (0 <= config.server.decode_workers <= 64, "server.decode_workers must be 0-64"),
        (1 <= config.server.workers <= WORKERS_MAX, f"server.workers must be 1-{WORKERS_MAX}"),
        (config.server.max_connections >= 1, "server.max_connections must be at least 1"),
        (bool(config.server.tls_cert) == bool(config.server.tls_key), "server.tls_cert and server.tls_key go together"),
        (all(":" in entry for entry in config.auth.basic), "auth.basic entries are \"user:password\""),
        (0 <= config.tcp.port <= 65535, "tcp.port must be 0-65535 (0 picks a free port)"),
        (valid_stream_name(config.tcp.stream), "tcp.stream must be a valid stream name"),
        (config.spool.fsync in FSYNC_POLICIES, f"spool.fsync must be one of {', '.join(FSYNC_POLICIES)}"),
        (config.spool.fsync_interval > 0, "spool.fsync_interval must be positive"),
        (config.spool.max_bytes > 0, "spool.max_bytes must be positive"),
        (config.segments.max_bytes > 0, "segments.max_bytes must be positive"),
        (config.segments.max_records > 0, "segments.max_records must be positive"),
        (config.segments.max_age > 0, "segments.max_age must be positive"),
        (config.store.shares_happy >= 1, "store.shares_happy must be at least 1"),
        (config.uploader.interval > 0, "uploader.interval must be positive"),
        (config.uploader.verify_interval > 0, "uploader.verify_interval must be positive"),
        (config.uploader.prune_interval > 0, "uploader.prune_interval must be positive"),
        (config.uploader.backoff_base > 0, "uploader.backoff_base must be positive"),
        (config.uploader.freeze_after >= 0, "uploader.freeze_after must be 0 or more"),
        (config.retention.keep > 0, "retention.keep must be positive (or forever)"),
        (all(keep > 0 for _, keep in config.retention.streams), "retention.streams keeps must be positive"),
        (config.retention.min_segments >= 0, "retention.min_segments must be 0 or more"),
        (
            config.segments.compression in COMPRESSIONS,
            f"segments.compression must be one of {', '.join(COMPRESSIONS)}",
        ),
        (
            config.sink_id == "" or SINK_ID.fullmatch(config.sink_id) is not None,
            "sink_id must be 1-64 of [A-Za-z0-9_.-], starting with a letter or digit",
        ),
        (
            config.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
            "log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL",
        ),
        (config.log_format in LOG_FORMATS, f"log_format must be one of {', '.join(LOG_FORMATS)}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    levels = {"gzip": range(0, 10), "zstd": range(-7, 23)}[config.segments.compression]
    if config.segments.compression_level not in levels:
        raise ConfigError(
            f"segments.compression_level for {config.segments.compression} must be "
            f"{levels.start}..{levels.stop - 1}"
        )
    if config.segments.compression == "zstd":
        try:
            import zstandard  # noqa: F401
        except ImportError:
            raise ConfigError(
                "segments.compression = 'zstd' needs the zstandard package: pip install 'archiver[zstd]'"
            ) from None
