"""Where a replay sends its batches: NDJSON over HTTP, or TCP (RFC 5424 octet-counted, or JSON
lines). A sender either takes a whole batch or raises: ``TargetUnavailable`` for what a later
try may fix (refused, reset, timeout, 429, 5xx), ``TargetRefused`` for what it will not.

TCP has no acknowledgement: a batch counts as taken once the kernel has it, so a replay
interrupted by a broken connection may have lost what the receiver had not read; the replay
resends from its last checkpoint only on a restart."""

from __future__ import annotations

import socket
from typing import Any, Callable, Protocol
from urllib.parse import urlsplit

import requests

from archiver.app.replay_wire import json_line, octet_counted, rfc5424

FORMATS = ("rfc5424", "json")


class TargetUnavailable(Exception):
    """The target did not take the batch this time; try again later."""


class TargetRefused(Exception):
    """The target refused the batch; trying again would not help."""


class Sender(Protocol):
    def send(self, records: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


class HttpSender:
    """A POST of NDJSON per batch on one keep-alive session; a 2xx means taken (by another
    archiver: as durable as its fsync policy makes an answered record)."""

    def __init__(self, url: str, timeout: float, token: str | None = None) -> None:
        self._url = url
        self._timeout = timeout
        self._session = requests.Session()
        if token is not None:
            self._session.headers["Authorization"] = f"Bearer {token}"

    def send(self, records: list[dict[str, Any]]) -> None:
        body = b"".join(map(json_line, records))
        try:
            answer = self._session.post(self._url, data=body, timeout=self._timeout,
                                        headers={"Content-Type": "application/x-ndjson"})
        except requests.RequestException as err:
            raise TargetUnavailable(f"{type(err).__name__}: {err}") from None
        if answer.status_code == 429 or answer.status_code >= 500:
            raise TargetUnavailable(f"HTTP {answer.status_code}")
        if not 200 <= answer.status_code < 300:
            raise TargetRefused(f"HTTP {answer.status_code}: {answer.text[:200]}")

    def close(self) -> None:
        self._session.close()


class TcpSender:
    """One connection, made again after a failure; each record framed by ``frame``."""

    def __init__(self, host: str, port: int, frame: Callable[[dict[str, Any]], bytes], timeout: float) -> None:
        self._address = (host, port)
        self._frame = frame
        self._timeout = timeout
        self._conn: socket.socket | None = None

    def send(self, records: list[dict[str, Any]]) -> None:
        data = b"".join(map(self._frame, records))
        try:
            if self._conn is None:
                self._conn = socket.create_connection(self._address, timeout=self._timeout)
            self._conn.sendall(data)
        except OSError as err:
            self.close()
            raise TargetUnavailable(f"{type(err).__name__}: {err}") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _syslog_frame(record: dict[str, Any]) -> bytes:
    return octet_counted(rfc5424(record))


def open_sender(url: str, fmt: str, token: str | None = None, timeout: float = 30.0) -> Sender:
    """The sender for ``--to``: http(s)://HOST:PORT/STREAM (``token`` for a sink with [auth])
    or tcp://HOST:PORT."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        return HttpSender(url, timeout, token)
    if parts.scheme == "tcp" and parts.hostname and parts.port:
        frame = _syslog_frame if fmt == "rfc5424" else json_line
        return TcpSender(parts.hostname, parts.port, frame, timeout)
    raise ValueError(f"--to must be http://HOST:PORT/STREAM or tcp://HOST:PORT, not {url!r}")
