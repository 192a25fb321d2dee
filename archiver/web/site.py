"""The archive browser's pages: an aiohttp application over one Archive, read-only.

Every route lives under PREFIX, a reserved ``/_`` path, so the sink can mount the same
application beside its ingest routes (where ``GET /<stream>?...`` is a record). Blocking
reads (manifest, segments, the store) run on worker threads; pages are rendered on the
server and need no script except for the chart and the live tail. Nothing here renders a
capability: rows are shown by id, segments are downloaded through this site.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from operator import itemgetter
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import jinja2
from aiohttp import web

from archiver.common.units import format_ts, parse_time
from archiver.format.manifest import SegmentRow, open_for_reading
from archiver.read.classic import classic_line
from archiver.read.reader import Archive, Filters
from archiver.web.search import LEVELS, PAGE_SIZE, Search, SearchError
from archiver.web.summary import age_text, days, summarize

PREFIX = "/_web"
HERE = Path(__file__).parent
ARCHIVE_KEY = web.AppKey("archive", Archive)
JINJA_KEY = web.AppKey("jinja", jinja2.Environment)
TAIL_WINDOW = 300.0  # seconds of records a tail page starts with
TAIL_MAX = 500  # records a tail poll answers at most
T = TypeVar("T")


def create_site(archive: Archive, *, title: str = "archive") -> web.Application:
    """The browser over ``archive``, to mount at PREFIX (``parent.add_subapp(PREFIX, site)``)."""
    site = web.Application()
    site[ARCHIVE_KEY] = archive
    env = jinja2.Environment(loader=jinja2.PackageLoader("archiver.web", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(prefix=PREFIX, title=title, levels=LEVELS, page_size=PAGE_SIZE, live=archive.data_dir is not None)
    env.filters["number"] = lambda n: f"{n:,}"
    env.filters["line"] = lambda record: classic_line(record).split("\n", 1)[0]
    site[JINJA_KEY] = env
    site.router.add_get("/", _home)
    site.router.add_get("/streams/{stream}", _stream)
    site.router.add_get("/search", _search)
    site.router.add_get("/search.ndjson", _download_records)
    site.router.add_get("/segments/{segment}", _download_segment)
    site.router.add_get("/tail", _tail)
    site.router.add_get("/tail.json", _tail_records)
    site.router.add_static("/static", HERE / "static")
    return site


async def _off_loop(func: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, func, *args)


def _render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    body = request.app[JINJA_KEY].get_template(template).render(**context)
    return web.Response(text=body, status=status, content_type="text/html",
                        headers={"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
                                 "Referrer-Policy": "no-referrer"})


async def _home(request: web.Request) -> web.Response:
    rows = await _off_loop(request.app[ARCHIVE_KEY].segments)
    streams = summarize(rows)
    return _render(request, "home.html", streams=streams, chart={s.name: s.hourly for s in streams})


async def _stream(request: web.Request) -> web.Response:
    name = request.match_info["stream"]
    archive = request.app[ARCHIVE_KEY]
    rows = await _off_loop(archive.segments, name)
    if not rows:
        return _render(request, "error.html", 404, message=f"no sealed segments in stream {name!r}")
    leases = await _off_loop(_lease_times, archive)
    now = time.time()
    lease_age = {row_id: age_text(now - when) for row_id, when in leases.items() if when}
    return _render(request, "stream.html", stream=summarize(rows)[0], days=days(rows), lease_age=lease_age)


def _lease_times(archive: Archive) -> dict[str, float]:
    """When each segment's lease was last added, from the sink's own manifest; a store root's
    published manifests do not say, so an archive read from one shows none."""
    if archive.data_dir is None:
        return {}
    manifest = open_for_reading(archive.data_dir.root)
    try:
        return {t.name: t.renewed_at for t in manifest.lease_targets() if t.kind == "segment"}
    finally:
        manifest.close()


async def _search(request: web.Request) -> web.Response:
    search = Search()
    try:
        search = Search.from_query(request.query, request.query.getall("field", []))
        wanted = search.filters(time.time())
    except SearchError as err:  # the form keeps what was typed, to be corrected
        return _render(request, "search.html", 400, search=search, error=str(err), records=[], more=False)
    records: list[dict[str, Any]] = []
    if request.query:
        archive = request.app[ARCHIVE_KEY]
        start = search.page * PAGE_SIZE
        records = await _off_loop(_page, archive.records(**wanted.__dict__), start, PAGE_SIZE + 1)
    more = len(records) > PAGE_SIZE
    return _render(request, "search.html", search=search, records=records[:PAGE_SIZE], more=more,
                   searched=bool(request.query), error=None)


def _page(records: Iterator[dict[str, Any]], start: int, count: int) -> list[dict[str, Any]]:
    """Records ``start`` to ``start + count`` of a lazy stream, reading no further."""
    return list(itertools.islice(records, start, start + count))


async def _download_records(request: web.Request) -> web.StreamResponse:
    try:
        wanted = Search.from_query(request.query, request.query.getall("field", [])).filters(time.time())
    except SearchError as err:
        raise web.HTTPBadRequest(text=f"error: {err}\n") from None
    chunks = request.app[ARCHIVE_KEY].json_chunks(wanted)
    return await _stream_out(request, chunks, "application/x-ndjson", "records.ndjson")


async def _download_segment(request: web.Request) -> web.StreamResponse:
    segment_id = request.match_info["segment"]
    archive = request.app[ARCHIVE_KEY]
    rows = [row for row in await _off_loop(archive.segments) if row.id == segment_id]
    if not rows:
        raise web.HTTPNotFound(text=f"error: no segment {segment_id}\n")
    name = Path(rows[0].store_path or rows[0].local_path or segment_id).name
    return await _stream_out(request, _blocks(archive, rows[0]), "application/octet-stream", name)


def _blocks(archive: Archive, row: SegmentRow) -> Iterator[bytes]:
    with archive.open_segment(row) as stored:
        while block := stored.read(1024 * 1024):
            yield block


async def _stream_out(request: web.Request, chunks: Iterator[bytes], content_type: str, filename: str) -> web.StreamResponse:
    """``chunks`` sent as they are read (each read on a worker thread): memory stays bounded."""
    response = web.StreamResponse(headers={
        "Content-Type": content_type, "Content-Disposition": f'attachment; filename="{filename}"'})
    await response.prepare(request)
    while (chunk := await _off_loop(next, chunks, None)) is not None:
        await response.write(chunk)
    await response.write_eof()
    return response


async def _tail(request: web.Request) -> web.Response:
    if request.app[ARCHIVE_KEY].data_dir is None:
        return _render(request, "error.html", 404,
                       message="a live tail needs a data dir: this archive is read from a store")
    return _render(request, "tail.html", stream=request.query.get("stream", ""))


async def _tail_records(request: web.Request) -> web.Response:
    """Records from ``since``, never earlier than the last TAIL_WINDOW seconds (an older one
    would read the archive back to it), open segments included, at most TAIL_MAX of the
    newest; the page drops those it already shows."""
    archive = request.app[ARCHIVE_KEY]
    if archive.data_dir is None:
        raise web.HTTPNotFound(text="error: a live tail needs a data dir\n")
    now = time.time()
    since = earliest = format_ts(now - TAIL_WINDOW)
    if asked := request.query.get("since"):
        try:
            since = max(parse_time(asked, now), earliest)
        except ValueError as err:
            raise web.HTTPBadRequest(text=f"error: {err}\n") from None
    wanted = Filters(stream=request.query.get("stream") or None, since=since)
    by_ts = itemgetter("ts")
    newest = await _off_loop(lambda: heapq.nlargest(TAIL_MAX, archive.records(**wanted.__dict__, include_open=True),
                                                    key=by_ts))  # holds TAIL_MAX records, never all
    lines = [{"ts": r["ts"], "line": classic_line(r)} for r in sorted(newest, key=by_ts)]
    return web.json_response({"records": lines})


def standalone_app(archive: Archive, token: str | None = None, title: str = "archive") -> web.Application:
    """The site on its own, as `archiver web` serves it: ``/`` leads to PREFIX; with ``token``
    every request must carry it."""
    from archiver.web.access import token_guard

    app = web.Application(middlewares=[token_guard(token)] if token else [])
    app.add_subapp(PREFIX, create_site(archive, title=title))
    app.router.add_get("/", _to_site)
    return app


async def _to_site(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther(PREFIX + "/")
