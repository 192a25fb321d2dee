"""``POST /_admin/import``: ``archiver import`` sending its batches through the running sink,
so a data dir never has two writers. ``?position`` answers how far the file whose first bytes
are the body was imported; otherwise the body is a batch (archiver.spool.imports), answered
once it is durable and the file's offset committed, or 409 when the file's offset is no longer
the one the batch was read from (another import of the same file)."""

from __future__ import annotations

from dataclasses import asdict

import orjson
from aiohttp import web

from archiver.format.manifest import HEAD_BYTES
from archiver.format.record import valid_stream_name
from archiver.spool.imports import ImportSpool, PositionMoved, SpoolFull, batch_from_wire

IMPORTS_KEY = web.AppKey("imports", ImportSpool)


async def import_batch(request: web.Request) -> web.Response:
    """The route's handler; the caller has checked the admin credentials."""
    return await answer_import(request.app[IMPORTS_KEY], await request.read(), "position" in request.query)


async def answer_import(spool: ImportSpool, body: bytes, asks_position: bool) -> web.Response:
    """One request of the route, wherever it arrived (a worker relays it to its primary)."""
    if asks_position:
        position = await spool.position(body[:HEAD_BYTES])
        return web.Response(body=orjson.dumps(asdict(position)), content_type="application/json")
    try:
        batch = batch_from_wire(body)
    except ValueError as err:
        raise web.HTTPBadRequest(text=f"error: {err}\n") from None
    if not valid_stream_name(batch.stream):
        raise web.HTTPBadRequest(text=f"error: invalid stream name {batch.stream!r}\n")
    try:
        await spool.append(batch)
    except SpoolFull as full:
        raise web.HTTPServiceUnavailable(text=f"error: {full}\n") from None
    except PositionMoved as moved:
        raise web.HTTPConflict(text=f"error: {moved}\n") from None
    return web.Response(body=orjson.dumps({"records": batch.records, "rejected": batch.rejected.count}),
                        content_type="application/json")
