"""Opening an archive by what a user names: a config file, a data dir, or a store URL with a
root capability. The public ``archiver.open_archive`` and the CLI's ``-c``/``--archive`` come here;
the read side itself knows nothing of configuration."""

from __future__ import annotations

from pathlib import Path

from archiver.app.config import Config, load_config
from archiver.read.reader import Archive, data_dir_archive, existing_data_dir, store_archive
from archiver.store import open_store


def open_archive(source: str | Path) -> Archive:
    """An Archive from a config file, a data dir, or a store URL holding a root capability."""
    text = str(source)
    if "://" in text:
        return store_archive(open_store(text, create=False))
    path = Path(source)
    if path.is_file():
        return config_archive(load_config(path))
    return data_dir_archive(existing_data_dir(path))


def config_archive(config: Config) -> Archive:
    """The archive a loaded config describes: its data dir, its store (``store.url``; the one
    the sink recorded in its manifest when that is empty or ``embedded``) and its
    ``store.shares_happy`` for verify. The CLI's ``-c CONFIG`` comes here."""
    url = config.store.url if config.store.url not in ("", "embedded") else None
    return data_dir_archive(existing_data_dir(config.data_dir), url, config.store.shares_happy)
