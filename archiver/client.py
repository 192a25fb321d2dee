"""Logging handlers for applications that send to archiver.

``ArchiveHandler`` renders each record in the application (final message, exc_text, stack)
and hands it to a background thread that ships NDJSON batches over one keep-alive connection;
the logging call itself never waits on the network. ``FormattingHTTPHandler`` is the stdlib
``HTTPHandler`` plus the rendered ``message``/``exc_text`` and a timeout.

```python
import logging
from archiver.client import ArchiveHandler

logging.getLogger().addHandler(ArchiveHandler("http://127.0.0.1:8000/app"))
```
"""

from __future__ import annotations

import base64
import collections
import logging
import logging.handlers
import os
import random
import ssl
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests
import requests.adapters
import requests.auth

DROP_NEW = "drop_new"
DROP_OLD = "drop_old"
_SKIP = {"args", "exc_info", "msg", "stack_info", "message"}


def render(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    """The record as JSON-ready fields: message rendered, exceptions as text, the rest as is."""
    fields = {key: value for key, value in record.__dict__.items() if key not in _SKIP}
    fields["message"] = record.getMessage()
    fields["msg"] = str(record.msg)
    if record.exc_info:
        fields["exc_text"] = record.exc_text or formatter.formatException(record.exc_info)
    if record.stack_info:
        fields["stack_info"] = formatter.formatStack(record.stack_info)
    return fields


class _Authorization(requests.auth.AuthBase):
    """A fixed ``Authorization`` header. Set as the session's auth, so ~/.netrc cannot replace it."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self.value
        return request


class _ContextAdapter(requests.adapters.HTTPAdapter):
    """Verifies the sink with the caller's ``ssl.SSLContext`` alone, as ``http.client`` (and so
    ``HTTPHandler``) does: requests would otherwise load its CA bundle into that context."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        super().__init__()

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host, pool = super().build_connection_pool_key_attributes(request, verify, cert)
        pool.pop("ca_certs", None)  # from REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE
        pool.pop("ca_cert_dir", None)
        pool.update(ssl_context=self.context, cert_reqs=self.context.verify_mode)
        return host, pool

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Nothing to add: the context already says what to trust."""


class ArchiveHandler(logging.Handler):
    """Batches records to an archiver stream URL without ever blocking the logging call.

    - A bounded queue (``queue_size``); when full, ``overflow`` says which record to drop
      (``drop_new``: the one being logged; ``drop_old``: the oldest queued). ``dropped`` counts them.
    - A sender thread posts NDJSON batches of up to ``batch_size`` records, at least every
      ``flush_interval`` seconds. When the sink fails (no connection, timeout, 5xx, 408, 429,
      401, 403) it is tried again after an exponential backoff with jitter (up to 30 s), however
      fast records arrive: an outage costs one attempt per backoff interval.
    - With ``buffer_dir``, batches the sink cannot take, and full batches that arrive while
      backing off, are written there and sent first once it answers again, so records survive a
      sink outage and an application restart. Without it they wait in the queue.
    - ``flush()`` and ``close()`` try the sink at once, even while backing off, and wait at most
      ``timeout`` seconds for the records queued before the call to be sent; records logged
      meanwhile by other threads do not hold them up. After a failed try they return; ``close()``
      then counts what it could not keep, and what was logged after it, in ``dropped``.
    - Records the sender thread logs itself (urllib3's DEBUG lines about its own requests, with
      this handler on a root logger at DEBUG) are not archived, only counted in ``skipped``:
      each send would log the next record to send.
    - ``credentials=(user, password)`` (Basic, encoded as ``HTTPHandler`` does) or ``token``
      (Bearer) authenticate to a sink with ``[auth]``. A 401 or 403 is retried like an outage,
      not dropped: fixing the sink's ``[auth]`` lets the records through, and with ``buffer_dir``
      so does restarting the application with the right credentials. It is reported once on
      stderr per episode, when ``logging.raiseExceptions`` is set, as ``handleError`` does.
    - ``secure=True`` sends to an ``http://`` URL over HTTPS (an ``https://`` URL always is);
      ``context``, an ``ssl.SSLContext``, says which server certificates to trust.
    - Other 4xx answers are final (the same bytes would be refused again; the sink keeps them in
      ``_rejected``) and counted in ``refused``.
    """

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        queue_size: int = 10_000,
        overflow: str = DROP_NEW,
        buffer_dir: str | Path | None = None,
        timeout: float = 5.0,
        credentials: tuple[str, str] | None = None,
        token: str | None = None,
        secure: bool = False,
        context: ssl.SSLContext | None = None,
        level: int = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        if overflow not in (DROP_NEW, DROP_OLD):
            raise ValueError(f"overflow must be {DROP_NEW!r} or {DROP_OLD!r}")
        if credentials is not None and token is not None:
            raise ValueError("credentials and token both set the Authorization header: pass one")
        if secure:
            url = urlsplit(url)._replace(scheme="https").geturl()
        if context is not None and urlsplit(url).scheme != "https":
            raise ValueError("context only makes sense with secure=True or an https:// URL")
        self.url = url
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.queue_size = queue_size
        self.overflow = overflow
        self.timeout = timeout
        self.buffer_dir = Path(buffer_dir) if buffer_dir is not None else None
        if self.buffer_dir is not None:
            self.buffer_dir.mkdir(parents=True, exist_ok=True)
        self.dropped = 0
        self.sent = 0
        self.refused = 0  # records the sink refused for good (4xx)
        self.skipped = 0  # records the sender thread logged itself
        self._queue: collections.deque[tuple[int, bytes]] = collections.deque()  # (sequence number, line)
        self._queued = 0  # the sequence number of the latest record queued
        self._wakeup = threading.Condition()
        self._flush_requests = 0  # flush() and close() calls so far ...
        self._flushes_done = 0  # ... and how many of them the sender has answered
        self._flush_mark = 0  # the latest of them waits for the records up to this sequence number
        self._closing = False
        self._stopped = False
        self._auth_reported = False
        self._session = requests.Session()
        if credentials is not None:
            basic = base64.b64encode("{}:{}".format(*credentials).encode()).decode("ascii")
            self._session.auth = _Authorization(f"Basic {basic}")
        elif token is not None:
            self._session.auth = _Authorization(f"Bearer {token}")
        if context is not None:
            self._session.mount("https://", _ContextAdapter(context))
        self._formatter = logging.Formatter()
        self._thread = threading.Thread(target=self._run, name="archiver-handler", daemon=True)
        self._thread.start()

    def handle(self, record: logging.LogRecord) -> bool:
        """Records from the sender thread (urllib3's, about its requests) are skipped, and before
        taking the handler lock: ``logging.shutdown()`` holds it while ``close()`` waits for that
        very thread. Archived, each send would also log the next record to send."""
        if threading.current_thread() is self._thread:
            self.skipped += 1  # only ever the sender thread: no lock needed
            return False
        return super().handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = orjson.dumps(render(record, self.formatter or self._formatter), default=repr)
        except Exception:  # noqa: BLE001 - logging must not raise into the application
            self.handleError(record)
            return
        with self._wakeup:
            if len(self._queue) >= self.queue_size:
                self.dropped += 1
                if self.overflow == DROP_NEW:
                    return
                self._queue.popleft()
            self._queued += 1
            self._queue.append((self._queued, line))
            if len(self._queue) >= self.batch_size:
                self._wakeup.notify()

    def flush(self) -> None:
        """Try the sink now; wait up to ``timeout`` until the records queued so far are sent (or
        buffered on disk) or the sink failed this try."""
        deadline = time.monotonic() + self.timeout
        with self._wakeup:
            wanted = self._request_flush()
            self._wakeup.wait_for(lambda: self._flushes_done >= wanted or self._stopped, deadline - time.monotonic())

    def close(self) -> None:
        """Flush, then stop the sender; wait up to ``timeout`` for it. The sender closes the
        session itself once done with it: a send may outlast the wait."""
        if not self._closing:
            with self._wakeup:
                self._closing = True
                self._request_flush()
            self._thread.join(self.timeout)
        super().close()

    def _request_flush(self) -> int:
        """Ask the sender to try now for the records queued so far; the request's number.
        The caller holds ``_wakeup``."""
        self._flush_requests += 1
        self._flush_mark = self._queued
        self._wakeup.notify_all()
        return self._flush_requests

    # -- the sender thread -------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        retry_at = 0.0  # while backing off, the sink is not tried before this monotonic time
        while not self._stopped:
            with self._wakeup:
                backing_off = time.monotonic() < retry_at
                # emit() notifies on every record past batch_size. While backing off, only a
                # flush(), a close() or a full batch to spool to disk ends the wait early:
                # retrying on each record would make an outage a hot loop.
                self._wakeup.wait_for(
                    lambda: self._urgent()
                    or len(self._queue) >= self.batch_size and (not backing_off or self.buffer_dir is not None),
                    retry_at - time.monotonic() if backing_off else self.flush_interval,
                )
                urgent, requested, mark, closing = self._urgent(), self._flush_requests, self._flush_mark, self._closing
                trying = urgent or time.monotonic() >= retry_at
                batch = self._take()
            sent = False
            try:
                sent = trying and self._send_buffered() and (not batch or self._post(_lines(batch)))
                if not sent and batch:
                    self._keep(batch)
                # a failed flush() or close() has had its try: the rest goes to disk untried
                while urgent and not sent and self.buffer_dir is not None and (batch := self._take()):
                    self._keep(batch)
            except Exception:  # noqa: BLE001 - e.g. a full disk for the buffer: never kill the thread
                with self._wakeup:
                    self.dropped += len(batch)
            if trying:
                failures = 0 if sent else failures + 1
                retry_at = 0.0 if sent else time.monotonic() + _backoff(failures)
            with self._wakeup:
                if urgent and (not sent or not self._holds(mark)):
                    self._flushes_done = requested
                    if closing:  # nowhere left to keep what the sink did not take
                        self.dropped += len(self._queue)
                        self._queue.clear()
                        self._stopped = True
                    self._wakeup.notify_all()
        self._session.close()

    def _urgent(self) -> bool:
        """A flush() or close() is waiting."""
        return self._flush_requests > self._flushes_done

    def _holds(self, mark: int) -> bool:
        """Records up to sequence number ``mark`` are still queued. The caller holds ``_wakeup``."""
        return bool(self._queue) and self._queue[0][0] <= mark

    def _take(self) -> list[tuple[int, bytes]]:
        with self._wakeup:
            return [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]

    def _post(self, body: bytes) -> bool:
        """True when the batch is done with: taken (200), or refused for good (a 4xx other than
        401, 403, 408, 429: retrying the same bytes could never succeed; the sink keeps them in
        _rejected where it can). False when it should be retried."""
        try:
            response = self._session.post(
                self.url, data=body, headers={"Content-Type": "application/x-ndjson"}, timeout=self.timeout
            )
        except requests.RequestException:
            return False
        count = body.count(b"\n") + 1
        if response.status_code == 200:
            self.sent += count
            self._auth_reported = False
            return True
        if response.status_code in (401, 403):
            self._report_auth(response.status_code)
            return False
        if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
            self.refused += count
            return True
        return False

    def _report_auth(self, status: int) -> None:
        """Once per episode, on stderr like ``handleError``: the records are kept, not dropped,
        but nothing will get through until the credentials match."""
        if not self._auth_reported and logging.raiseExceptions:
            sys.stderr.write(
                f"--- Logging error ---\nArchiveHandler: {self.url} answered {status}: check its credentials"
                f" or token; records are kept and retried with backoff\n"
            )
        self._auth_reported = True

    def _keep(self, batch: list[tuple[int, bytes]]) -> None:
        """A batch the sink did not take: to disk when there is a buffer dir, else back to the
        front of the queue, trimmed to ``queue_size`` at the end ``overflow`` drops from."""
        if self.buffer_dir is not None:
            path = self.buffer_dir / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.ndjson"
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(_lines(batch))
            os.replace(temporary, path)
            return
        with self._wakeup:
            self._queue.extendleft(reversed(batch))
            excess = max(0, len(self._queue) - self.queue_size)
            self.dropped += excess
            trim = self._queue.pop if self.overflow == DROP_NEW else self._queue.popleft
            for _ in range(excess):
                trim()

    def _send_buffered(self) -> bool:
        """Send batches left on disk, oldest first; False while the sink still refuses."""
        if self.buffer_dir is None:
            return True
        for path in sorted(self.buffer_dir.glob("*.ndjson")):
            if not self._post(path.read_bytes()):
                return False
            path.unlink()
        return True


def _lines(batch: list[tuple[int, bytes]]) -> bytes:
    """A batch's records as NDJSON, without their sequence numbers."""
    return b"\n".join(line for _, line in batch)


def _backoff(failures: int) -> float:
    """Seconds before the next try: 0.1 doubling to 30, each jittered down by up to half so
    many handlers do not retry in step."""
    return min(30.0, 0.1 * 2 ** min(failures - 1, 9)) * (0.5 + random.random() / 2)


class FormattingHTTPHandler(logging.handlers.HTTPHandler):
    """``logging.handlers.HTTPHandler`` that also sends the rendered ``message`` and
    ``exc_text``, and gives up after ``timeout`` seconds instead of blocking forever."""

    def __init__(
        self,
        host: str,
        url: str,
        method: str = "POST",
        secure: bool = False,
        credentials: tuple[str, str] | None = None,
        context: Any = None,
        timeout: float = 5.0,
    ) -> None:
        super().__init__(host, url, method, secure, credentials, context)
        self.timeout = timeout
        self._plain = logging.Formatter()

    def mapLogRecord(self, record: logging.LogRecord) -> dict[str, Any]:
        fields = dict(record.__dict__)
        fields["message"] = record.getMessage()
        if record.exc_info:
            fields["exc_text"] = record.exc_text or (self.formatter or self._plain).formatException(record.exc_info)
        return fields

    def getConnection(self, host: str, secure: bool) -> Any:
        connection = super().getConnection(host, secure)
        connection.timeout = self.timeout
        return connection
