"""Configuration: layering, validation messages, and the documented example kept complete."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import pytest

from archiver.app.config import KEYS, SECTIONS, Config, ConfigError, Duration, field_converters, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_defaults() -> None:
    config = load_config()
    assert config.server.host == "127.0.0.1" and config.server.port == 8000
    assert config.spool.fsync == "always" and config.segments.compression == "gzip"


def test_layers_file_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text('data_dir = "spool-here"\n[server]\nport = 9000\nhost = "0.0.0.0"\n[segments]\nmax_bytes = "1MiB"\n')
    config = load_config(path, {"ARCHIVER_SERVER_PORT": "9100", "ARCHIVER_SEGMENTS_MAX_AGE": "2m",
                                "ARCHIVER_LOG_LEVEL": "debug", "UNRELATED": "x"}, {"server.port": 9200})
    assert config.data_dir == tmp_path / "spool-here"  # relative to the file
    assert config.server.port == 9200 and config.server.host == "0.0.0.0"
    assert config.segments.max_bytes == 1024**2 and config.segments.max_age == 120
    assert config.log_level == "debug"


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[server]\nprot = 1\n", {}, "unknown config key 'server.prot'"),
        ("", {"ARCHIVER_SPOOL_FSYNK": "always"}, "unknown config key 'spool.fsynk'"),
        ('[spool]\nfsync = "sometimes"\n', {}, "spool.fsync must be one of always, interval, never"),
        ('[segments]\nmax_bytes = "lots"\n', {}, "segments.max_bytes = 'lots'"),
        ("[server]\nport = 70000\n", {}, "server.port must be 0-65535"),
        ("[server]\nport = true\n", {}, "expected an integer"),
        ("[server]\nhost = 5\n", {}, "expected a string"),
        ("[server]\nport = 80.5\n", {}, "server.port = 80.5"),
        ("data_dir = 5\n", {}, "data_dir = 5"),
        ("", {"ARCHIVER_SPOOL_FSYNC_INTERVAL": "soon"}, "spool.fsync_interval = 'soon' (from environment)"),
        ('[segments]\ncompression = "lz4"\n', {}, "segments.compression must be one of gzip, zstd"),
        ("[segments]\ncompression_level = 12\n", {}, "compression_level for gzip must be 0..9"),
        ('sink_id = "has space"\n', {}, "sink_id must be"),
        ("server = 3\n", {}, "[server] must be a table"),
        ("[server\n", {}, "is not valid TOML"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, toml: str, env: dict, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(path, env)
    assert message in str(err.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/archiver.toml")


def test_every_key_is_documented_with_its_default() -> None:
    """config/archiver.toml lists every key with the built-in default, and nothing else."""
    documented_path = ROOT / "config" / "archiver.toml"
    documented = tomllib.loads(documented_path.read_text())
    from_file = load_config(documented_path)
    defaults = Config()
    top = {f.name for f in dataclasses.fields(Config) if f.name not in SECTIONS}
    assert set(documented) - set(SECTIONS) == top
    for section, cls in SECTIONS.items():
        assert set(documented[section]) == {f.name for f in dataclasses.fields(cls)}, section
        assert getattr(from_file, section) == getattr(defaults, section), section
    assert from_file.sink_id == defaults.sink_id and from_file.log_level == defaults.log_level
    assert from_file.data_dir == documented_path.parent / defaults.data_dir


def test_dev_config_loads() -> None:
    config = load_config(ROOT / "config" / "dev.toml")
    assert config.data_dir == ROOT / "data" or config.data_dir.resolve() == (ROOT / "data").resolve()


def test_container_config_loads() -> None:
    """The image's config (docker/archiver.toml) is only read inside a container: keep it valid here."""
    config = load_config(ROOT / "docker" / "archiver.toml")
    assert (config.store.url, config.store.shares_happy, config.tcp.enabled) == ("tahoe://gateway:3456", 3, True)
    assert str(config.data_dir) == "/var/lib/archiver" and config.server.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("raw", "trusted"),
    [("false", False), ("False", False), (" 0 ", False), ("no", False), ("off", False),
     ("true", True), ("1", True), ("YES", True), ("on", True)],
)
def test_admin_trust_loopback_from_the_environment(raw: str, trusted: bool) -> None:
    assert load_config(env={"ARCHIVER_ADMIN_TRUST_LOOPBACK": raw}).admin.trust_loopback is trusted


def test_admin_trust_loopback_from_toml_and_its_errors(tmp_path: Path) -> None:
    assert load_config().admin.trust_loopback is True
    path = tmp_path / "archiver.toml"
    path.write_text("[admin]\ntrust_loopback = false\ntoken = \"adm1n\"\n")
    assert load_config(path).admin.trust_loopback is False
    for value in ('"maybe"', "2"):
        path.write_text(f"[admin]\ntrust_loopback = {value}\n")
        with pytest.raises(ConfigError, match="admin.trust_loopback"):
            load_config(path)
    with pytest.raises(ConfigError, match="admin.trust_loopback = 'nope' \\(from environment\\): expected true or false"):
        load_config(env={"ARCHIVER_ADMIN_TRUST_LOOPBACK": "nope"})


def _fields() -> list[tuple[str, str, Any]]:
    """(section, key, real type) of every config key; section "" is the top level."""
    found = []
    for section, cls in {"": Config, **SECTIONS}.items():
        hints = get_type_hints(cls, include_extras=True)
        found += [(section, f.name, hints[f.name]) for f in dataclasses.fields(cls) if f.name not in SECTIONS]
    return found


def _value(config: Config, section: str, key: str) -> Any:
    return getattr(getattr(config, section) if section else config, key)


def _has_type(value: Any, hint: Any) -> bool:
    """``value`` is of the field type ``hint``: exactly (True is no int), items of tuples too."""
    base = getattr(hint, "__origin__", hint)  # Annotated[int, ...] -> int
    if get_origin(base) is tuple:
        return type(value) is tuple and all(type(item) is get_args(base)[0] for item in value)
    return isinstance(value, base) if base is Path else type(value) is base


def _env_text(value: Any) -> str:
    """A default as someone would write it in the environment."""
    if isinstance(value, bool):
        return "yes" if value else "off"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def test_every_key_has_a_converter_and_each_layer_gives_the_field_its_type() -> None:
    """Every field of every section: a TOML value (the documented file), an environment string
    and a flag each come out as the field's type and its default."""
    fields = _fields()
    assert {(section, key) for section, key, _ in fields} == {(s, k) for s, keys in KEYS.items() for k in keys}
    defaults = Config()
    name = lambda section, key: "ARCHIVER_" + (f"{section}_{key}" if section else key).upper()  # noqa: E731
    layers = {
        "toml": load_config(ROOT / "config" / "archiver.toml"),
        "env": load_config(env={name(s, k): _env_text(_value(defaults, s, k)) for s, k, _ in fields}),
        "flags": load_config(overrides={f"{s}.{k}" if s else k: _value(defaults, s, k) for s, k, _ in fields}),
    }
    for layer, config in layers.items():
        for section, key, hint in fields:
            value = _value(config, section, key)
            assert _has_type(value, hint), (layer, section, key, value)
            if key != "data_dir":  # a file's is relative to the file
                assert value == _value(defaults, section, key), (layer, section, key)


@dataclass(frozen=True)
class _WithFloats:
    ratio: float = 0.5
    window: Duration = 1.0


def test_a_float_field_gets_a_float_from_a_string() -> None:
    """A float field without units is converted too, not passed through as the env's str."""
    converters = field_converters(_WithFloats)
    assert converters["ratio"]("0.25") == 0.25 and type(converters["ratio"]("0.25")) is float
    assert type(converters["ratio"](2)) is float  # TOML's integer 2
    assert converters["window"]("200ms") == pytest.approx(0.2)
    for bad in ("half", "nan", True):
        with pytest.raises(ValueError):
            converters["ratio"](bad)


def test_a_field_of_a_type_without_a_converter_fails_loudly() -> None:
    @dataclass(frozen=True)
    class Odd:
        labels: dict[str, str] = dataclasses.field(default_factory=dict)

    with pytest.raises(TypeError, match=r"Odd.labels: no config converter for dict\[str, str\]"):
        field_converters(Odd)


def test_flags_are_checked_like_any_layer() -> None:
    with pytest.raises(ConfigError, match=r"server.port = 'eighty' \(from flags\)"):
        load_config(overrides={"server.port": "eighty"})
    config = load_config(overrides={"data_dir": Path("~/spool"), "tcp.enabled": True, "server.port": "0"})
    assert config.data_dir == Path.home() / "spool" and config.tcp.enabled is True and config.server.port == 0
