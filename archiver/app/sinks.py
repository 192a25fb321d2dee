"""The sink running on a data dir, as the CLI finds it (DATA/sink.json and a live PID) and
talks to it (its own credentials, its JSON)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import orjson

from archiver.app.options import load


def running_sink(config_path: Path | None, data_dir: Path | None) -> dict[str, Any] | None:
    """DATA/sink.json of the running sink, or None when none runs on that data dir."""
    config = load(config_path, {"data_dir": data_dir})
    try:
        info: dict[str, Any] = orjson.loads((config.data_dir / "sink.json").read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    try:
        os.kill(info["pid"], 0)
    except (ProcessLookupError, KeyError):
        return None  # left by a sink that was killed
    return info


def credentials(config_path: Path | None, data_dir: Path | None) -> dict[str, str]:
    """The Authorization header the CLI sends its sink: admin.token, else the first auth token."""
    config = load(config_path, {"data_dir": data_dir})
    token = config.admin.token or next(iter(config.auth.tokens), "")
    return {"Authorization": f"Bearer {token}"} if token else {}


def ask_sink(config_path: Path | None, data_dir: Path | None, method: str, path: str, timeout: float) -> Any:
    """A request to the sink running on the data dir, with the CLI's credentials; its JSON."""
    import requests

    sink = running_sink(config_path, data_dir)
    if sink is None:
        raise click.ClickException("no sink is running on this data dir")
    headers = credentials(config_path, data_dir)
    response = requests.request(method, f"{sink['http']}{path}", headers=headers, timeout=timeout)
    if response.status_code != 200:
        raise click.ClickException(f"{path} failed ({response.status_code}): {response.text.strip()}")
    return response.json()
