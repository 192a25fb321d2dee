"""What a replayed record looks like on the wire: a JSON object another archiver (or any JSON
receiver) maps back onto the same record, or an RFC 5424 syslog message. Pure functions.

A receiving archiver makes a record's ``fields`` of the whole object it is sent, and derives
``ts``, ``level``, ``logger`` and ``message`` from it (``ingest/decode/jsonbody.py``). So a
record is sent as its original ``fields`` when those alone give back its ``ts``, ``level``,
``logger`` and ``message`` without help from the receive time: then the replayed record is
the original one, ``fields`` included. Otherwise (no time key, so ``ts`` was the receive time;
a form record whose message came from ``msg`` and ``args`` in a way JSON does not repeat) it is
sent whole, as the canonical record: the receiver's ``ts``, ``level``, ``logger`` and
``message`` are the original ones, and its ``fields`` hold the original record.
"""

from __future__ import annotations

import re
from typing import Any

from archiver.format.record import Context, encode_record
from archiver.ingest.decode.jsonbody import json_record

# A receive time no archived record has: a derivation that used it cannot match.
_NO_RECEIVE_TIME = Context("replay", None, 0.0)
_COMPARED = ("ts", "level", "logger", "message")
# RFC 5424 severities for the canonical levels; anything else is notice (5).
_SEVERITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}
_FACILITY_USER = 1
_APP_NAME = re.compile(r"[!-~]{1,48}")  # printable US-ASCII, no space


def json_object(record: dict[str, Any]) -> dict[str, Any]:
    """The object to send so that a receiving archiver rebuilds ``record``."""
    fields = record.get("fields")
    if type(fields) is dict:
        derived = json_record(fields, _NO_RECEIVE_TIME)
        if all(derived[key] == record.get(key) for key in _COMPARED):
            return fields
    return record


def json_line(record: dict[str, Any]) -> bytes:
    """:func:`json_object` as one line of NDJSON."""
    return encode_record(json_object(record))


def rfc5424(record: dict[str, Any]) -> bytes:
    """One RFC 5424 message: the record's ``ts`` as TIMESTAMP, its logger as APP-NAME, its
    level as the severity (facility user), its message as MSG."""
    severity = _SEVERITY.get(record.get("level") or "", 5)
    logger = record.get("logger") or ""
    app = logger if _APP_NAME.fullmatch(logger) else "-"
    header = f"<{_FACILITY_USER * 8 + severity}>1 {record['ts']} - {app} - - -"
    message = record.get("message")
    return header.encode() + (b"" if message is None else b" " + message.encode("utf-8", "surrogatepass"))


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 octet-counting framing: a message may hold newlines."""
    return b"%d %s" % (len(message), message)
