"""Logging handlers for applications that send to archiver.

``ArchiveHandler`` renders each record in the application (final message, exc_text, stack)
and hands it to a background thread that ships NDJSON batches over one keep-alive connection:
through a bounded queue, or through files in ``buffer_dir`` that survive the application. ``FormattingHTTPHandler`` is the stdlib
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
import enum
import fcntl
import logging
import logging.handlers
import math
import os
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

from archiver.common.backoff import retry_delay

BLOCK = "block"
DROP_NEW = "drop_new"
DROP_OLD = "drop_old"
_SKIP = ("args", "exc_info", "msg", "stack_info", "message")
_NEWLINE = orjson.OPT_APPEND_NEWLINE
_HEADERS = {"Content-Type": "application/x-ndjson"}
# A failed try is retried after 0.1 s doubling to 30 s, jittered so many handlers do not retry in step.
RETRY_BASE = 0.1
RETRY_MAX = 30.0


def render(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    """The record as JSON-ready fields: message rendered, exceptions as text, the rest as is."""
    fields = record.__dict__.copy()  # a copy and five pops: a quarter of a filtering comprehension's cost
    for key in _SKIP:
        fields.pop(key, None)
    fields["message"] = record.getMessage()
    fields["msg"] = str(record.msg)
    if record.exc_info:
        fields["exc_text"] = record.exc_text or formatter.formatException(record.exc_info)
    if record.stack_info:
        fields["stack_info"] = formatter.formatStack(record.stack_info)
    return fields


class _Authorization(requests.auth.AuthBase):
    """A fixed ``Authorization`` header, or none. Always set as the session's auth, so requests
    never reads ~/.netrc: it cannot replace the header, add credentials nobody passed, or cost
    the sender a stat (and a wait for the GIL) per batch."""

    def __init__(self, value: str | None) -> None:
        self.value = value

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.value is not None:
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


class SenderState(enum.Enum):
    """What the sender thread is doing; emit() decides from it whether a full queue waits or drops."""

    IDLE = "idle"  # the sink answered last time (or was never tried): waiting for a batch to be due
    SENDING = "sending"  # posting a batch; a full queue waits for room
    BACKOFF = "backoff"  # the last try failed, for less than block_timeout: a full queue still waits
    OUTAGE_DROPPING = "outage_dropping"  # failing for block_timeout: a full queue drops at once
    OUTAGE_RETRYING = "outage_retrying"  # a try during that outage; a full queue still drops
    CLOSING = "closing"  # close(): the last tries for what was queued before it
    STOPPED = "stopped"


class SenderEvent(enum.Enum):
    """What ends a sender state; ``transition`` says where each one leads."""

    DUE = "due"  # a full batch, flush_interval passed with records waiting, a waiting emit(), a flush()
    RETRY_DUE = "retry_due"  # the backoff interval passed, or a flush() asks for a try now
    SENT = "sent"  # the sink took the batch (2xx) or refused it for good
    FAILED = "failed"  # no answer, or one to retry, for less than block_timeout since the outage began
    FAILED_LONG = "failed_long"  # the same, block_timeout or more since the outage began
    BLOCK_EXPIRED = "block_expired"  # block_timeout passed while backing off
    CLOSE = "close"  # close() was called
    STOP = "stop"  # the last tries are over


_S, _E = SenderState, SenderEvent
_TRANSITIONS: dict[tuple[SenderState, SenderEvent], SenderState] = {
    (_S.IDLE, _E.DUE): _S.SENDING,
    (_S.IDLE, _E.CLOSE): _S.CLOSING,
    (_S.SENDING, _E.SENT): _S.IDLE,
    (_S.SENDING, _E.FAILED): _S.BACKOFF,
    (_S.SENDING, _E.FAILED_LONG): _S.OUTAGE_DROPPING,
    (_S.BACKOFF, _E.RETRY_DUE): _S.SENDING,
    (_S.BACKOFF, _E.BLOCK_EXPIRED): _S.OUTAGE_DROPPING,
    (_S.BACKOFF, _E.CLOSE): _S.CLOSING,
    (_S.OUTAGE_DROPPING, _E.RETRY_DUE): _S.OUTAGE_RETRYING,
    (_S.OUTAGE_DROPPING, _E.CLOSE): _S.CLOSING,
    (_S.OUTAGE_RETRYING, _E.SENT): _S.IDLE,
    (_S.OUTAGE_RETRYING, _E.FAILED): _S.OUTAGE_DROPPING,
    (_S.OUTAGE_RETRYING, _E.FAILED_LONG): _S.OUTAGE_DROPPING,
    (_S.CLOSING, _E.STOP): _S.STOPPED,
}
# emit() drops at once rather than wait for room in these states
_DROPPING = frozenset({_S.OUTAGE_DROPPING, _S.OUTAGE_RETRYING, _S.CLOSING, _S.STOPPED})


def transition(state: SenderState, event: SenderEvent) -> SenderState:
    """The sender's next state. Any pair not in the table is a bug, so it raises rather than
    leaving the handler in a state nobody planned for."""
    try:
        return _TRANSITIONS[(state, event)]
    except KeyError:
        raise ValueError(f"no transition from {state.name} on {event.name}") from None


class _Outcome(enum.Enum):
    """How the sink answered one POST."""

    TAKEN = "taken"  # 2xx
    REFUSED = "refused"  # a 4xx that retrying cannot fix
    TOO_LARGE = "too_large"  # 413: smaller bodies may pass
    RETRY = "retry"  # no answer, 5xx, 408, 429, 401, 403


class _Segment:
    """One append-only file of the buffer: NDJSON lines, sent oldest first."""

    __slots__ = ("path", "number", "size", "records", "acked", "acked_records", "in_flight", "dropped", "complete")

    def __init__(self, path: Path, number: int, size: int = 0, records: int = 0, acked: int = 0, complete: bool = False) -> None:
        self.path = path
        self.number = number  # creation order, for flush marks
        self.size = size  # bytes written
        self.records = records  # records in it (from ``acked`` on, for a file of an earlier process)
        self.acked = acked  # bytes the sink has taken, from the start
        self.acked_records = 0
        self.in_flight = 0  # records of the batch being posted from it
        self.dropped = False  # removed at the buffer's bound; its batch in flight is counted apart
        self.complete = complete  # no more writes: a last line without "\n" is still a record

    @property
    def waiting(self) -> int:
        """Records neither acknowledged nor in flight."""
        return self.records - self.acked_records - self.in_flight


class _Buffer:
    """The on-disk queue of ``buffer_dir``: every record is written to the newest segment before
    emit() returns, and only removed once the sink has acknowledged it, or dropped (oldest
    first) when the unacknowledged bytes pass ``max_bytes``. ``CURSOR`` says how far the oldest
    segment was acknowledged, so a restart resends from there. All methods but ``sync`` are
    called with the handler's ``lock`` held."""

    CURSOR = "cursor"

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.segment_bytes = max(4096, min(8 * 1024**2, max_bytes // 8))
        self.segments: collections.deque[_Segment] = collections.deque()
        self.unacked_bytes = 0
        self.unacked_records = 0
        self._numbers = 0
        self._fd = -1  # the newest segment's, for appending
        self._dirty = False  # written since the last sync
        self._dir_dirty = False  # a segment created since the last sync
        self._retired: list[int] = []  # descriptors to sync once more, then close (only sync() closes)
        self.closed = False
        directory.mkdir(parents=True, exist_ok=True)
        self._cursor_fd = os.open(directory / self.CURSOR, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:  # held until close(), or the process dies: two senders on one buffer would send twice
            fcntl.flock(self._cursor_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._cursor_fd)
            raise ValueError(f"buffer_dir {directory} is in use by another ArchiveHandler: give each process its own") from None
        self._load()

    def _load(self) -> None:
        """Take up the segments an earlier process left, from its cursor on."""
        name, offset = "", 0
        fields = os.pread(self._cursor_fd, 256, 0).split()
        if len(fields) == 2:
            name, offset = fields[0].decode(errors="replace"), int(fields[1])
        paths = sorted(self.dir.glob("*.ndjson"))
        names = [path.name for path in paths]
        for path in paths:
            if name in names and path.name < name:  # acknowledged whole; its removal was cut short
                path.unlink()
                continue
            data = path.read_bytes()
            acked = min(offset, len(data)) if path.name == name else 0
            rest = data[acked:]
            records = rest.count(b"\n") + (1 if rest and not rest.endswith(b"\n") else 0)
            if not records:
                path.unlink()
                continue
            self._numbers += 1
            self.segments.append(_Segment(path, self._numbers, len(data), records, acked, complete=True))
            self.unacked_bytes += len(data) - acked
            self.unacked_records += records

    def append(self, line: bytes) -> int:
        """Write one record; the number of oldest records dropped to stay under ``max_bytes``."""
        segment = self.segments[-1] if self.segments and not self.segments[-1].complete else None
        if segment is None or segment.size >= self.segment_bytes:
            segment = self._open_segment()
        os.write(self._fd, line)
        segment.size += len(line)
        segment.records += 1
        self.unacked_bytes += len(line)
        self.unacked_records += 1
        self._dirty = True
        dropped = 0
        while self.unacked_bytes > self.max_bytes and len(self.segments) > 1:
            dropped += self._drop_oldest()
        return dropped

    def _open_segment(self) -> _Segment:
        if self.segments and not self.segments[-1].complete:
            self.segments[-1].complete = True
            self._retired.append(self._fd)
        path = self.dir / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.ndjson"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._numbers += 1
        segment = _Segment(path, self._numbers)
        self.segments.append(segment)
        self._dir_dirty = True
        return segment

    def _drop_oldest(self) -> int:
        """Remove the oldest segment; the records it held that will never be sent."""
        segment = self.segments.popleft()
        segment.dropped = True
        self.unacked_bytes -= segment.size - segment.acked
        self.unacked_records -= segment.records - segment.acked_records
        segment.path.unlink(missing_ok=True)
        return segment.waiting  # its batch in flight, if any, is counted when the sink answers

    def mark(self) -> tuple[int, int]:
        """Where the buffer ends now: a flush waits until the sink has taken everything before."""
        if not self.segments:
            return (self._numbers, 0)
        return (self.segments[-1].number, self.segments[-1].size)

    def holds(self, mark: tuple[int, int]) -> bool:
        """Records written before ``mark`` are still unacknowledged."""
        if not self.segments:
            return False
        first = self.segments[0]
        return (first.number, first.acked) < mark and first.acked < first.size

    def take(self, batch_size: int, max_body: int) -> tuple[_Segment, bytes, int] | None:
        """The next batch: its segment, its bytes (whole lines, up to ``batch_size`` of them and
        ``max_body`` bytes unless one line alone is longer) and its record count."""
        if not self.segments or self.segments[0].acked >= self.segments[0].size:
            return None
        segment = self.segments[0]
        fd = os.open(segment.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.pread(fd, min(max_body, segment.size - segment.acked), segment.acked)
            end, count = _cut(data, batch_size)
            while not count:  # one line longer than max_body: it goes alone (and may be refused)
                more = os.pread(fd, max_body, segment.acked + len(data))
                if not more:
                    end, count = len(data), 1  # a last line without "\n", cut by a crash
                    break
                data += more
                end, count = _cut(data, 1)
        finally:
            os.close(fd)
        segment.in_flight = count
        return segment, data[:end], count

    def settle(self, segment: _Segment, body_bytes: int, records: int) -> None:
        """The sink answered for the first ``records`` of the batch taken from ``segment``
        (``body_bytes`` long); the rest of it goes back to waiting."""
        segment.in_flight = 0
        if segment.dropped or not records:
            return
        segment.acked += body_bytes
        segment.acked_records += records
        self.unacked_bytes -= body_bytes
        self.unacked_records -= records
        os.pwrite(self._cursor_fd, f"{segment.path.name:<64} {segment.acked:020d}\n".encode(), 0)
        if segment.acked >= segment.size:
            self.segments.popleft()
            segment.path.unlink(missing_ok=True)
            if not segment.complete:  # the newest: the next record opens a new one
                segment.complete = True
                self._retired.append(self._fd)
                self._fd = -1

    def sync(self, lock: threading.Lock) -> None:
        """fdatasync what was written since the last call (and the directory when a segment was
        created), then close retired descriptors. Takes ``lock`` only to read what to sync."""
        with lock:
            fds = [self._fd] if self._dirty and self._fd >= 0 else []
            retired, self._retired = self._retired, []
            sync_dir, self._dirty, self._dir_dirty = self._dir_dirty, False, False
        for fd in fds + retired:
            os.fdatasync(fd)
        for fd in retired:
            os.close(fd)
        if sync_dir:
            dir_fd = os.open(self.dir, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def close(self, lock: threading.Lock) -> None:
        """Sync and close everything; records written from now on are refused (emit counts them)."""
        with lock:
            self.closed = True
            if self.segments and not self.segments[-1].complete:
                self.segments[-1].complete = True
                self._retired.append(self._fd)
                self._fd = -1
        self.sync(lock)
        os.close(self._cursor_fd)


def _cut(data: bytes, batch_size: int) -> tuple[int, int]:
    """Where the first ``batch_size`` whole lines of ``data`` end, and how many there are."""
    end = count = 0
    while count < batch_size:
        newline = data.find(b"\n", end)
        if newline < 0:
            break
        end = newline + 1
        count += 1
    return end, count


class ArchiveHandler(logging.Handler):
    """Batches records to an archiver stream URL from a background thread; while the sink
    answers, no record is ever dropped.

    - Without ``buffer_dir``, records wait in a queue of ``queue_size``. When it is full the
      logging call waits for room (``overflow="block"``, the default), but only until the sink has
      been failing for ``block_timeout`` seconds (plus at most one try's ``timeout``): from then on
      until a send succeeds, a record that finds the queue full is dropped at once.
      ``overflow="drop_new"`` (the record being logged) or ``"drop_old"`` (the oldest queued) never
      wait and drop instead.
    - With ``buffer_dir``, the queue is on disk: emit() appends each record to a file there (a
      ``write()``, no fsync) before it returns, and a thread fsyncs it every ``flush_interval``.
      Records leave the buffer once the sink acknowledges them, so killing the application loses
      nothing (a restart with the same directory sends what was not acknowledged, possibly again);
      a power loss can lose the last ``flush_interval``. Unacknowledged records past
      ``buffer_max_bytes`` are dropped oldest first, an eighth of the bound at a time.
      ``queue_size`` and ``overflow`` do not apply. One handler (so one process) per directory:
      a second one while the first is open raises ``ValueError``.
    - ``dropped`` counts every record dropped, and each episode of drops is reported once on
      stderr with its count (when ``logging.raiseExceptions`` is set, as ``handleError`` does):
      after a send with no drop since the previous one, when the sender falls idle, or at close.
    - A sender thread, a state machine (``SenderState``), posts NDJSON batches of up to
      ``batch_size`` records and ``max_body_bytes`` bytes (keep it at or under the sink's
      ``server.max_body_bytes``), at least every ``flush_interval`` seconds. A 413 splits the
      batch and sends the halves; a single record the sink finds too large is counted in
      ``refused``, as are batches refused with another final 4xx (the sink keeps them in
      ``_rejected``).
    - When the sink fails (no connection, timeout, 5xx, 408, 429, 401, 403) it is tried again after
      an exponential backoff with jitter (up to 30 s), however fast records arrive.
    - ``flush()`` and ``close()`` try the sink at once, even while backing off, and wait at most
      ``timeout`` seconds for the records queued before the call to be sent; records logged
      meanwhile by other threads do not hold them up. After a failed try they return; ``close()``
      then counts what it could not keep, and what is logged after it, in ``dropped``.
    - Records the sender thread logs itself (urllib3's DEBUG lines about its own requests, with
      this handler on a root logger at DEBUG) are not archived, only counted in ``skipped``:
      each send would log the next record to send.
    - ``credentials=(user, password)`` (Basic, encoded as ``HTTPHandler`` does) or ``token``
      (Bearer) authenticate to a sink with ``[auth]``. A 401 or 403 is retried like an outage and
      reported once on stderr per episode: fixing the sink's ``[auth]`` lets the records through,
      and with ``buffer_dir`` so does restarting the application with the right credentials.
    - ``secure=True`` sends to an ``http://`` URL over HTTPS (an ``https://`` URL always is);
      ``context``, an ``ssl.SSLContext``, says which server certificates to trust.
    """

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        queue_size: int = 10_000,
        overflow: str = BLOCK,
        buffer_dir: str | Path | None = None,
        timeout: float = 5.0,
        block_timeout: float = 5.0,
        buffer_max_bytes: int = 256 * 1024**2,
        max_body_bytes: int = 16 * 1024**2,
        credentials: tuple[str, str] | None = None,
        token: str | None = None,
        secure: bool = False,
        context: ssl.SSLContext | None = None,
        level: int = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        if overflow not in (BLOCK, DROP_NEW, DROP_OLD):
            raise ValueError(f"overflow must be {BLOCK!r}, {DROP_NEW!r} or {DROP_OLD!r}")
        if credentials is not None and token is not None:
            raise ValueError("credentials and token both set the Authorization header: pass one")
        if buffer_max_bytes < 64 * 1024:
            raise ValueError("buffer_max_bytes must be at least 64 KiB")
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
        self.block_timeout = block_timeout
        self.max_body_bytes = max_body_bytes
        self.buffer_dir = Path(buffer_dir) if buffer_dir is not None else None
        self.dropped = 0
        self.sent = 0
        self.refused = 0  # records the sink refused for good (4xx)
        self.skipped = 0  # records the sender thread logged itself
        self.state = SenderState.IDLE
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the sender waits on it
        self._room = threading.Condition(self._lock)  # emit() waits on it for room in the queue
        self._done = threading.Condition(self._lock)  # flush() waits on it
        self._buffer = _Buffer(self.buffer_dir, buffer_max_bytes) if self.buffer_dir is not None else None
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0  # records ever put in the queue ...
        self._taken = 0  # ... and taken off its front (a batch put back is untaken)
        # records that make a batch due; a full queue that emit() waits on is due at once
        self._due = min(batch_size, queue_size) if buffer_dir is None and overflow == BLOCK else batch_size
        self._flush_requests = 0  # flush() and close() calls so far ...
        self._flushes_done = 0  # ... and how many of them the sender has answered
        self._flush_mark: Any = 0  # the latest of them waits for the records before this mark
        self._close_requested = False
        self._failures = 0
        self._retry_at = 0.0  # monotonic time of the next try while backing off
        self._outage_since: float | None = None  # monotonic start of the first failed try, until one succeeds
        self._episode = 0  # records dropped and not yet reported ...
        self._episode_reason = ""  # ... and why the first of them was
        self._dropped_at_last_send = 0
        self._auth_reported = False
        self._session = requests.Session()
        authorization = None
        if credentials is not None:
            authorization = "Basic " + base64.b64encode("{}:{}".format(*credentials).encode()).decode("ascii")
        elif token is not None:
            authorization = f"Bearer {token}"
        self._session.auth = _Authorization(authorization)
        if context is not None:
            self._session.mount("https://", _ContextAdapter(context))
        self._formatter = logging.Formatter()
        self._thread = threading.Thread(target=self._run, name="archiver-handler", daemon=True)
        self._thread.start()
        self._sync_stop = threading.Event()
        self._syncer: threading.Thread | None = None
        if self._buffer is not None:
            self._syncer = threading.Thread(target=self._sync_buffer, name="archiver-handler-sync", daemon=True)
            self._syncer.start()

    def handle(self, record: logging.LogRecord) -> bool:
        """Records from the sender thread (urllib3's, about its requests) are skipped, and before
        taking the handler lock: ``logging.shutdown()`` holds it while ``close()`` waits for that
        very thread. Archived, each send would also log the next record to send."""
        if threading.get_ident() == self._thread.ident:
            self.skipped += 1  # only ever the sender thread: no lock needed
            return False
        return super().handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        """Encode the record here, in the caller's thread (its message and arguments may change
        after the call), then queue it or append it to the buffer."""
        try:
            line = orjson.dumps(render(record, self.formatter or self._formatter), default=repr, option=_NEWLINE)
        except Exception:  # noqa: BLE001 - logging must not raise into the application
            self.handleError(record)
            return
        with self._lock:
            if self._buffer is not None:
                self._append_to_buffer(line, self._buffer)
            elif self.state is SenderState.STOPPED:
                self._note_drops(1, "logged after close()")
            elif len(self._queue) < self.queue_size or self._make_room():
                self._queue.append(line)
                self._queued += 1
                if len(self._queue) == self._due:  # crossing it is enough: the sender looks before it waits
                    self._work.notify()

    def _append_to_buffer(self, line: bytes, buffer: _Buffer) -> None:
        """The caller holds ``_lock``."""
        if buffer.closed:
            self._note_drops(1, "logged after close()")
            return
        try:
            dropped = buffer.append(line)
        except OSError as err:
            self._note_drops(1, f"buffer_dir could not be written ({err.strerror})")
            return
        if dropped:
            self._note_drops(dropped, f"buffer_dir held more than buffer_max_bytes ({buffer.max_bytes})")
        if buffer.unacked_records == self._due:  # crossing it is enough: the sender looks before it waits
            self._work.notify()

    def _make_room(self) -> bool:
        """The queue is full: wait, drop the oldest or drop this record, per ``overflow`` and the
        sender's state. True when the record may be queued. The caller holds ``_lock``."""
        if self.overflow == DROP_OLD:
            self._queue.popleft()
            self._taken += 1
            self._note_drops(1, "the queue was full (overflow=drop_old)")
            return True
        if self.overflow == BLOCK:
            self._work.notify()
            while self.state not in _DROPPING:
                self._room.wait(self.flush_interval)  # a timeout only as insurance: the sender notifies
                if len(self._queue) < self.queue_size:
                    return True
        why = "the queue was full (overflow=drop_new)" if self.overflow == DROP_NEW else self._why_dropping()
        self._note_drops(1, why)
        return False

    def _why_dropping(self) -> str:
        if self.state in (SenderState.CLOSING, SenderState.STOPPED):
            return "logged during or after close()"
        return f"the sink failed for longer than block_timeout ({self.block_timeout} s)"

    def _note_drops(self, count: int, why: str) -> None:
        """The caller holds ``_lock``."""
        if not self._episode:
            self._episode_reason = why
        self.dropped += count
        self._episode += count

    def flush(self) -> None:
        """Try the sink now; wait up to ``timeout`` until the records queued so far are sent or
        the sink failed this try (with ``buffer_dir`` they are on disk already)."""
        deadline = time.monotonic() + self.timeout
        with self._lock:
            wanted = self._request_flush()
            self._done.wait_for(
                lambda: self._flushes_done >= wanted or self.state is SenderState.STOPPED, deadline - time.monotonic()
            )

    def close(self) -> None:
        """Flush, then stop the sender; wait up to ``timeout`` for it. The sender closes the
        session and the buffer itself once done with them: a send may outlast the wait."""
        with self._lock:
            first = not self._close_requested
            if first:
                self._close_requested = True
                self._request_flush()
        if first:
            self._thread.join(self.timeout)
        super().close()

    def _request_flush(self) -> int:
        """Ask the sender to try now for the records queued so far; the request's number.
        The caller holds ``_lock``."""
        self._flush_requests += 1
        self._flush_mark = self._buffer.mark() if self._buffer is not None else self._queued
        self._work.notify_all()
        return self._flush_requests

    # -- the sender thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self.state is not SenderState.STOPPED:
                with self._lock:
                    event = self._next_event()
                    if event is None:
                        continue
                    self._fire(event)
                    state = self.state
                if state in (SenderState.SENDING, SenderState.OUTAGE_RETRYING):
                    outcome = self._try()
                    with self._lock:
                        self._fire(outcome)
                        self._answer_flushes(outcome is SenderEvent.SENT)
                elif state is SenderState.CLOSING:
                    self._finish()
                    with self._lock:
                        self._fire(SenderEvent.STOP)
        finally:
            with self._lock:
                self.state = SenderState.STOPPED  # even after a bug: emit() must not wait for nobody
                self._room.notify_all()
                self._done.notify_all()
            self._session.close()

    def _next_event(self) -> SenderEvent | None:
        """Wait for what ends the current state; None when nothing did (look again). Called in
        IDLE, BACKOFF and OUTAGE_DROPPING, with ``_lock`` held."""
        if self.state is SenderState.IDLE:
            self._work.wait_for(
                lambda: self._close_requested or self._urgent() or self._pending() >= self._due, self.flush_interval
            )
            if self._close_requested:
                return SenderEvent.CLOSE
            if self._urgent() or self._pending():
                return SenderEvent.DUE
            self._report_drops()  # a quiet moment ends an episode
            return None
        # While backing off only flush(), close() or the end of the interval end the wait:
        # retrying on each record would make an outage a hot loop.
        block_at = math.inf
        if self.state is SenderState.BACKOFF and self._blocking and self._outage_since is not None:
            block_at = self._outage_since + self.block_timeout
        self._work.wait_for(
            lambda: self._close_requested or self._urgent(), min(self._retry_at, block_at) - time.monotonic()
        )
        if self._close_requested:
            return SenderEvent.CLOSE
        now = time.monotonic()
        if self._urgent() or now >= self._retry_at:
            return SenderEvent.RETRY_DUE
        if now >= block_at:
            return SenderEvent.BLOCK_EXPIRED
        return None

    def _fire(self, event: SenderEvent) -> None:
        """Take a transition. emit() calls waiting for room learn whether to go on waiting.
        The caller holds ``_lock``."""
        self.state = transition(self.state, event)
        if self.state in _DROPPING:
            self._room.notify_all()

    @property
    def _blocking(self) -> bool:
        """A full queue makes emit() wait (until block_timeout into an outage)."""
        return self._buffer is None and self.overflow == BLOCK

    def _pending(self) -> int:
        """Records waiting to be sent. The caller holds ``_lock``."""
        return self._buffer.unacked_records if self._buffer is not None else len(self._queue)

    def _urgent(self) -> bool:
        """A flush() or close() is waiting. The caller holds ``_lock``."""
        return self._flush_requests > self._flushes_done

    def _holds(self, mark: Any) -> bool:
        """Records from before ``mark`` are still to be sent. The caller holds ``_lock``."""
        return self._buffer.holds(mark) if self._buffer is not None else self._taken < mark

    def _answer_flushes(self, sent: bool) -> None:
        """A try is over: flush() calls waiting are answered once it failed or their records are
        sent. The caller holds ``_lock``."""
        if sent and self.dropped == self._dropped_at_last_send:
            self._report_drops()  # a send with no drop since the last one ends an episode
        if sent:
            self._dropped_at_last_send = self.dropped
        if self._urgent() and (not sent or not self._holds(self._flush_mark)):
            self._flushes_done = self._flush_requests
            self._done.notify_all()

    def _try(self) -> SenderEvent:
        """Send one batch: SENT when the sink took it (or there was none), else FAILED or,
        ``block_timeout`` into an outage, FAILED_LONG."""
        started = time.monotonic()
        try:
            delivered = self._send_batch()
        except Exception:  # noqa: BLE001 - e.g. an unreadable buffer: retried like an outage
            self.handleError(logging.makeLogRecord({"msg": f"ArchiveHandler: sending to {self.url} failed"}))
            delivered = False
        with self._lock:
            if delivered:
                self._failures = 0
                self._outage_since = None
                self._auth_reported = False
                return SenderEvent.SENT
            self._failures += 1
            self._retry_at = time.monotonic() + retry_delay(self._failures, RETRY_BASE, RETRY_MAX)
            if self._outage_since is None:
                self._outage_since = started
            if self._blocking and time.monotonic() - self._outage_since >= self.block_timeout:
                return SenderEvent.FAILED_LONG
            return SenderEvent.FAILED

    def _send_batch(self) -> bool:
        """Post the next batch; True when it is done with (or there was none)."""
        if self._buffer is not None:
            with self._lock:
                taken = self._buffer.take(self.batch_size, self.max_body_bytes)
            if taken is None:
                return True
            segment, body, count = taken
            done, done_bytes = self._deliver(body, count)
            with self._lock:
                if segment.dropped:  # removed at the bound while in flight: what was not taken is lost
                    segment.in_flight = 0
                    if count > done:
                        self._note_drops(count - done, f"buffer_dir held more than buffer_max_bytes ({self._buffer.max_bytes})")
                else:
                    self._buffer.settle(segment, done_bytes, done)
            return done == count
        with self._lock:
            batch = self._take()
        if not batch:
            return True
        done, _ = self._deliver(b"".join(batch), len(batch))
        if done < len(batch):
            with self._lock:
                self._put_back(batch[done:])
        return done == len(batch)

    def _take(self) -> list[bytes]:
        """Up to ``batch_size`` records and ``max_body_bytes`` bytes (at least one record) off the
        queue's front. The caller holds ``_lock``."""
        queue, size = self._queue, 0
        batch: list[bytes] = []
        while queue and len(batch) < self.batch_size:
            size += len(queue[0])
            if batch and size > self.max_body_bytes:
                break
            batch.append(queue.popleft())
        self._taken += len(batch)
        self._room.notify_all()
        return batch

    def _put_back(self, rest: list[bytes]) -> None:
        """Records the sink did not take go back to the front of the queue. With ``overflow="block"``
        the queue may then exceed ``queue_size`` by up to one batch; otherwise it is trimmed at
        the end ``overflow`` drops from. The caller holds ``_lock``."""
        self._queue.extendleft(reversed(rest))
        self._taken -= len(rest)
        excess = len(self._queue) - self.queue_size
        if self.overflow == BLOCK or excess <= 0:
            return
        self._note_drops(excess, f"the queue was full (overflow={self.overflow})")
        for _ in range(excess):
            if self.overflow == DROP_NEW:
                self._queue.pop()
            else:
                self._queue.popleft()
                self._taken += 1

    def _deliver(self, body: bytes, count: int) -> tuple[int, int]:
        """Post ``count`` NDJSON records; how many of the first records, and bytes, are done with
        (taken, or refused for good). A 413 splits the body in two and sends each half."""
        outcome = self._post(body)
        if outcome is _Outcome.TAKEN:
            self.sent += count
            return count, len(body)
        if outcome is _Outcome.TOO_LARGE and count > 1:
            end, first = _cut(body, count // 2)
            done, done_bytes = self._deliver(body[:end], first)
            if done < first:
                return done, done_bytes
            rest, rest_bytes = self._deliver(body[end:], count - first)
            return done + rest, done_bytes + rest_bytes
        if outcome is _Outcome.RETRY:
            return 0, 0
        self.refused += count
        return count, len(body)

    def _post(self, body: bytes) -> _Outcome:
        """One POST. 4xx other than 401, 403, 408, 413, 429 are final: retrying the same bytes
        could never succeed, and the sink keeps them in _rejected."""
        try:
            response = self._session.post(self.url, data=body, headers=_HEADERS, timeout=self.timeout)
        except requests.RequestException:
            return _Outcome.RETRY
        status = response.status_code
        if 200 <= status < 300:
            return _Outcome.TAKEN
        if status == 413:
            return _Outcome.TOO_LARGE
        if status in (401, 403):
            self._report_auth(status)
            return _Outcome.RETRY
        if 400 <= status < 500 and status not in (408, 429):
            return _Outcome.REFUSED
        return _Outcome.RETRY

    def _report_auth(self, status: int) -> None:
        """Once per episode, on stderr like ``handleError``: the records are kept, not dropped,
        but nothing will get through until the credentials match."""
        if not self._auth_reported and logging.raiseExceptions:
            sys.stderr.write(
                f"--- Logging error ---\nArchiveHandler: {self.url} answered {status}: check its credentials"
                f" or token; records are kept and retried with backoff\n"
            )
        self._auth_reported = True

    def _report_drops(self) -> None:
        """One line on stderr for an episode of drops, like ``handleError``. The caller holds ``_lock``."""
        if self._episode and logging.raiseExceptions:
            sys.stderr.write(
                f"--- Logging error ---\nArchiveHandler: dropped {self._episode} records for {self.url}:"
                f" {self._episode_reason}\n"
            )
        self._episode = 0

    def _finish(self) -> None:
        """CLOSING: send what was logged before close() until done or the sink fails; then count
        what is left in the queue as dropped, or leave it in the buffer for the next process."""
        while True:
            with self._lock:
                if not self._holds(self._flush_mark):
                    break
            if self._try() is not SenderEvent.SENT:
                break
        if self._buffer is not None and self._syncer is not None:
            self._sync_stop.set()
            self._syncer.join()
            self._buffer.close(self._lock)
        with self._lock:
            if self._queue:
                self._note_drops(len(self._queue), "close() found the sink failing, or they were logged during it")
                self._queue.clear()
            self._report_drops()
            self._flushes_done = self._flush_requests
            self._done.notify_all()

    def _sync_buffer(self) -> None:
        """fsync the buffer every ``flush_interval``: a power loss loses at most that much."""
        assert self._buffer is not None
        while not self._sync_stop.wait(self.flush_interval):
            try:
                self._buffer.sync(self._lock)
            except OSError:
                self.handleError(logging.makeLogRecord({"msg": f"ArchiveHandler: syncing {self.buffer_dir} failed"}))


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
