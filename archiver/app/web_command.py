"""``archiver web``: the archive browser (archiver/web) on its own, over any archive a user can
name, read-only. It binds loopback unless told otherwise, and elsewhere only with a token."""

from __future__ import annotations

import asyncio
import signal
import sys

import click
from aiohttp import web

from archiver.app.options import archive_option, chosen_archive
from archiver.read.reader import Archive
from archiver.web.access import is_loopback
from archiver.web.site import PREFIX, standalone_app

TOKEN_ENV = "ARCHIVER_WEB_TOKEN"


@click.command("web")
@archive_option("A config, a data dir, or a store URL with a root read cap (tahoe://HOST:PORT/URI:DIR2-RO:...).",
                required=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8001, show_default=True, type=int, help="Port (0 picks a free one).")
@click.option("--token", envvar=TOKEN_ENV,
              help=f"Required to bind other than loopback: readers send it as a Bearer token or as the Basic "
                   f"password. ${TOKEN_ENV} sets it too.")
def web_command(archive: str, host: str, port: int, token: str | None) -> None:
    """Serve a read-only archive browser: streams, segments, search, downloads, live tail."""
    if not is_loopback(host) and not token:
        raise click.UsageError(f"binding {host} lets others read the archive: give --token (or ${TOKEN_ENV})")
    with chosen_archive(None, None, archive) as source:
        asyncio.run(_serve(source, host, port, token))


async def _serve(archive: Archive, host: str, port: int, token: str | None) -> None:
    runner = web.AppRunner(standalone_app(archive, token), access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as err:
            raise click.ClickException(f"cannot listen on {host}:{port}: {err.strerror}") from None
        bound_host, bound_port = runner.addresses[0][:2]
        print(f"archive browser on http://{bound_host}:{bound_port}{PREFIX}/", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
