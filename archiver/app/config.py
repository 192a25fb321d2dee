"""Configuration: TOML file, then ``ARCHIVER_*`` environment, then command-line flags.

Every key lives in a frozen dataclass below with its default; config/archiver.toml documents
each one (a test keeps the two in step). Environment names are ``ARCHIVER_<KEY>`` for top-level
keys and ``ARCHIVER_<SECTION>_<KEY>`` for the rest, e.g. ``ARCHIVER_SEGMENTS_MAX_BYTES=64MiB``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from archiver.common.units import parse_duration, parse_size
from archiver.format.layout import SINK_ID
from archiver.format.record import valid_stream_name
from archiver.format.segment import COMPRESSIONS
from archiver.spool.writer import FSYNC_POLICIES

ENV_PREFIX = "ARCHIVER_"
# ARCHIVER_* variables that are not config keys: the config file itself, the archive the
# reading commands open (cli.py), the tahoe executable (grid.find_tahoe) and test failpoints
# (failpoints.py).
NOT_CONFIG_ENV = {"ARCHIVER_CONFIG", "ARCHIVER_ARCHIVE", "ARCHIVER_TAHOE", "ARCHIVER_FAILPOINTS"}


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


def _size(default: int) -> Any:
    return field(default=default, metadata={"parse": parse_size})


def _duration(default: float) -> Any:
    return field(default=default, metadata={"parse": parse_duration})


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = _size(16 * 1024**2)
    max_decoded_bytes: int = _size(64 * 1024**2)
    max_line_bytes: int = _size(256 * 1024)
    decode_workers: int = 1
    max_connections: int = 1024
    shutdown_timeout: float = _duration(30.0)
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
    max_line_bytes: int = _size(1024**2)


@dataclass(frozen=True)
class SpoolConfig:
    max_bytes: int = _size(10 * 1024**3)
    fsync: str = "always"
    fsync_interval: float = _duration(0.2)
    retry_after: float = _duration(5.0)


@dataclass(frozen=True)
class SegmentsConfig:
    max_bytes: int = _size(64 * 1024**2)
    max_records: int = 1_000_000
    max_age: float = _duration(300.0)
    compression: str = "gzip"
    compression_level: int = 6


@dataclass(frozen=True)
class StoreConfig:
    url: str = ""
    shares_happy: int = 1


@dataclass(frozen=True)
class UploaderConfig:
    interval: float = _duration(30.0)
    publish_delay: float = _duration(5.0)
    verify_interval: float = _duration(60.0)
    prune_interval: float = _duration(60.0)
    keep_local: float = _duration(7 * 86400.0)
    repair: bool = False
    backoff_base: float = _duration(5.0)
    backoff_max: float = _duration(600.0)


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
    server: ServerConfig = field(default_factory=ServerConfig)
    tcp: TcpConfig = field(default_factory=TcpConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    segments: SegmentsConfig = field(default_factory=SegmentsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    uploader: UploaderConfig = field(default_factory=UploaderConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    grid: GridConfig = field(default_factory=GridConfig)


SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "tcp": TcpConfig,
    "auth": AuthConfig,
    "spool": SpoolConfig,
    "segments": SegmentsConfig,
    "store": StoreConfig,
    "uploader": UploaderConfig,
    "admin": AdminConfig,
    "grid": GridConfig,
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

    values: dict[str, dict[str, Any]] = {"": {}, **{name: {} for name in SECTIONS}}
    for origin, flat in layers:
        for dotted, raw in flat.items():
            section, _, key = dotted.rpartition(".")
            cls = SECTIONS.get(section, Config) if section else Config
            spec = _fields(cls).get(key)
            if spec is None or (not section and key in SECTIONS):
                raise ConfigError(f"unknown config key {dotted!r} (from {origin})")
            value = _convert(spec, raw, dotted, origin)
            if key == "data_dir" and origin not in ("environment", "flags"):
                value = base / value
            values[section][key] = value
    sections = {name: cls(**values[name]) for name, cls in SECTIONS.items()}
    config = Config(**values[""], **sections)
    validate(config)
    return config


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


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


def _convert(spec: dataclasses.Field[Any], raw: Any, dotted: str, origin: str) -> Any:
    parse: Callable[[Any], Any] | None = spec.metadata.get("parse")
    kind = spec.type
    try:
        if parse is not None:
            return parse(raw)
        if kind in ("int", int):
            if isinstance(raw, bool):
                raise ValueError("expected an integer")
            return int(raw)
        if kind in ("bool", bool):
            return _boolean(raw)
        if kind == "tuple[str, ...]":
            items = raw.split(",") if isinstance(raw, str) else raw
            if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
                raise ValueError("expected a list of strings (or, in the environment, comma-separated)")
            return tuple(item.strip() for item in items if item.strip())
        if kind in ("Path", Path):
            return Path(str(raw)).expanduser()
        if not isinstance(raw, str):
            raise ValueError("expected a string")
        return raw
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{dotted} = {raw!r} (from {origin}): {err}") from None


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


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
