"""A body is sniffed, never trusted from its headers: gzip and zlib by magic bytes, then JSON
(object, array, NDJSON, concatenated objects) by its first byte, else form-urlencoded as
``logging.handlers.HTTPHandler`` sends it."""

from __future__ import annotations

import zlib

from archiver.format.record import SOURCE_FORM, Context
from archiver.ingest.decode.form import form_record, parse_form
from archiver.ingest.decode.jsonbody import decode_json
from archiver.ingest.decode.result import BodyTooLarge, Decoded, DecodeError


def decompress(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """Undo gzip or zlib, recognised by magic bytes; raw deflate only when the header says so.

    GELF clients send zlib labelled ``gzip,deflate``, so the label only breaks ties.
    """
    label = (content_encoding or "").lower()
    if body[:2] == b"\x1f\x8b":
        return _inflate(body, 31, max_bytes, "gzip")
    if len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0:
        try:
            return _inflate(body, 15, max_bytes, "zlib")
        except BodyTooLarge:
            raise
        except DecodeError:
            if "deflate" in label or "gzip" in label:
                raise
            return body  # a plain body that happens to start like a zlib header
    if label.strip() == "deflate":
        return _inflate(body, -15, max_bytes, "deflate")
    return body


def _inflate(body: bytes, wbits: int, max_bytes: int, name: str) -> bytes:
    out = bytearray()
    data = body
    while data:
        inflater = zlib.decompressobj(wbits)
        try:
            out += inflater.decompress(data, max_bytes + 1 - len(out))
        except zlib.error as err:
            raise DecodeError(f"corrupt {name} body: {err}") from None
        if len(out) > max_bytes:
            raise BodyTooLarge(f"{name} body decompresses to more than {max_bytes} bytes")
        if not inflater.eof:
            raise DecodeError(f"truncated {name} body: the compressed stream ends early")
        # gzip allows concatenated members; anything after a zlib stream is an error.
        data = inflater.unused_data if wbits == 31 else b""
        if not wbits == 31 and inflater.unused_data:
            raise DecodeError(f"corrupt {name} body: trailing bytes after the stream")
    return bytes(out)


def decode_body(body: bytes, ctx: Context) -> Decoded:
    """Decode an already-decompressed request body into records and rejected parts."""
    head = body.lstrip()[:1]
    if not head:
        raise DecodeError("empty body: send a urlencoded record or JSON")
    if head in (b"{", b"["):
        return decode_json(body, ctx)
    return Decoded(SOURCE_FORM, [form_record(parse_form(body), ctx)])


def decode_query(query: str, ctx: Context) -> Decoded:
    """HTTPHandler's GET mode: the urlencoded record is the query string."""
    if not query:
        raise DecodeError("GET needs a urlencoded record in the query string")
    return Decoded(SOURCE_FORM, [form_record(parse_form(query.encode("latin-1")), ctx)])
