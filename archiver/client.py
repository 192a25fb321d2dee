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

import collections
import logging
import logging.handlers
import os
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import requests

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


class ArchiveHandler(logging.Handler):
    """Batches records to an archiver stream URL without ever blocking the logging call.

    - A bounded queue (``queue_size``); when full, ``overflow`` says which record to drop
      (``drop_new``: the one being logged; ``drop_old``: the oldest queued). ``dropped`` counts them.
    - A sender thread posts NDJSON batches of up to ``batch_size`` records, at least every
      ``flush_interval`` seconds, retrying with exponential backoff and jitter.
    - With ``buffer_dir``, batches the sink cannot take are written there and sent first once it
      answers again, so records survive a sink outage and an application restart.
    - ``flush()`` and ``close()`` wait at most ``timeout`` seconds for the queue to drain.
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
        level: int = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        if overflow not in (DROP_NEW, DROP_OLD):
            raise ValueError(f"overflow must be {DROP_NEW!r} or {DROP_OLD!r}")
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
        self._queue: collections.deque[bytes] = collections.deque()
        self._wakeup = threading.Condition()
        self._in_flight = 0
        self._closing = False
        self._session = requests.Session()
        self._formatter = logging.Formatter()
        self._thread = threading.Thread(target=self._run, name="archiver-handler", daemon=True)
        self._thread.start()

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
            self._queue.append(line)
            if len(self._queue) >= self.batch_size:
                self._wakeup.notify()

    def flush(self) -> None:
        """Wait up to ``timeout`` for queued records to be sent (or buffered on disk)."""
        deadline = time.monotonic() + self.timeout
        with self._wakeup:
            self._wakeup.notify()
            while (self._queue or self._in_flight) and time.monotonic() < deadline:
                self._wakeup.wait(0.05)

    def close(self) -> None:
        if not self._closing:
            self.flush()
            with self._wakeup:
                self._closing = True
                self._wakeup.notify()
            self._thread.join(self.timeout)
            self._session.close()
        super().close()

    # -- the sender thread -------------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while True:
            with self._wakeup:
                if not self._queue and not self._closing:
                    self._wakeup.wait(self.flush_interval)
                if self._closing and not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
                self._in_flight = len(batch)
            try:
                if self._send_buffered() and batch and self._post(b"\n".join(batch)):
                    attempt = 0
                elif batch:
                    attempt += 1
                    self._keep(batch)
                    self._backoff(attempt)
            except Exception:  # noqa: BLE001 - e.g. a full disk for the buffer: never kill the thread
                self.dropped += len(batch)
                attempt += 1
                self._backoff(attempt)
            finally:
                with self._wakeup:
                    self._in_flight = 0
                    self._wakeup.notify_all()

    def _post(self, body: bytes) -> bool:
        """True when the batch is done with: taken (200), or refused for good (a 4xx other than
        408/429: retrying the same bytes could never succeed; the sink keeps them in _rejected
        where it can). False when it should be retried."""
        try:
            response = self._session.post(
                self.url, data=body, headers={"Content-Type": "application/x-ndjson"}, timeout=self.timeout
            )
        except requests.RequestException:
            return False
        count = body.count(b"\n") + 1
        if response.status_code == 200:
            self.sent += count
            return True
        if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
            self.refused += count
            return True
        return False

    def _keep(self, batch: list[bytes]) -> None:
        """A batch the sink did not take: to disk when there is a buffer dir, else back to the
        front of the queue (dropping what no longer fits)."""
        if self.buffer_dir is not None:
            path = self.buffer_dir / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.ndjson"
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(b"\n".join(batch))
            os.replace(temporary, path)
            return
        with self._wakeup:
            if self._closing:  # nowhere to keep them: closing gives up after its timeout
                self.dropped += len(batch) + len(self._queue)
                self._queue.clear()
                return
            room = self.queue_size - len(self._queue)
            self.dropped += max(0, len(batch) - room)
            self._queue.extendleft(reversed(batch[: max(0, room)]))

    def _send_buffered(self) -> bool:
        """Send batches left on disk, oldest first; False while the sink still refuses."""
        if self.buffer_dir is None:
            return True
        for path in sorted(self.buffer_dir.glob("*.ndjson")):
            if not self._post(path.read_bytes()):
                return False
            path.unlink()
        return True

    def _backoff(self, attempt: int) -> None:
        delay = min(30.0, 0.1 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
        with self._wakeup:
            if not self._closing:
                self._wakeup.wait(delay)


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
