"""The archive browser: a read-only site over an Archive, served by `archiver web` and by the
running sink under ``/_web/`` (docs/web.md)."""
