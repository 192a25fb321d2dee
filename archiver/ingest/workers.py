"""Worker processes for CPU work, driven from the event loop over their stdin and stdout.

Each worker is ``python -m archiver.ingest.workers``: it reads calls (a pickled function
reference and its arguments, length-prefixed) from stdin, runs them one at a time and writes
each outcome back in order. Why not ``concurrent.futures.ProcessPoolExecutor``: its spawned
workers import the sink's whole ``__main__`` (CLI, aiohttp: 40 MB each), it adds a resource
tracker process and two threads that contend for the sink's GIL, and a worker of a sink killed
with SIGKILL waits for ever, since it holds both ends of its queue. Here a worker holds only
its own pipe ends, so it leaves as soon as its sink is gone (EOF on stdin).
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import logging
import pickle
import signal
import struct
import sys
from typing import Any, Callable

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!Q")
PIPE_BYTES = 1 << 20
_OK, _ERROR = 0, 1


class WorkerDied(Exception):
    """The worker running a call exited before answering it."""


class PoolClosed(Exception):
    """The pool was closed (the sink is stopping) before this call could start."""


class _Worker:
    """One child process and the calls it has not answered yet, oldest first."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.alive = True
        self._reader = asyncio.create_task(self._read_answers())

    async def call(self, function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        assert self.proc.stdin is not None
        payload = pickle.dumps((function, args), protocol=pickle.HIGHEST_PROTOCOL)
        answer = asyncio.get_running_loop().create_future()
        self.pending.append(answer)
        self.proc.stdin.writelines([_HEADER.pack(len(payload)), payload])
        try:
            await self.proc.stdin.drain()
        except (ConnectionError, BrokenPipeError):
            pass  # the reader sees the exit and fails every pending call
        return await answer

    async def _read_answers(self) -> None:
        assert self.proc.stdout is not None
        try:
            while True:
                (size,) = _HEADER.unpack(await self.proc.stdout.readexactly(_HEADER.size))
                status, value = pickle.loads(await self.proc.stdout.readexactly(size))
                answer = self.pending.popleft()
                if not answer.done():
                    answer.set_result(value) if status == _OK else answer.set_exception(value)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.alive = False
            code = await self.proc.wait()
            while self.pending:
                answer = self.pending.popleft()
                if not answer.done():
                    answer.set_exception(WorkerDied(f"worker {self.proc.pid} exited with {code}"))

    async def stop(self, timeout: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # EOF: the worker finishes what it has and leaves
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self._reader


class WorkerPool:
    """``size`` workers; each call goes to the one with the fewest calls outstanding."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.restarts = 0
        self._workers: list[_Worker] = []

    async def start(self) -> None:
        self._workers = [await self._spawn() for _ in range(self.size)]

    def pids(self) -> list[int]:
        return [worker.proc.pid for worker in self._workers]

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` in a worker; ``function`` must be importable by reference
        (a module-level function). Raises what it raised, or WorkerDied."""
        worker = self._least_busy()
        if not worker.alive:
            worker = await self._replace(worker)
        try:
            return await worker.call(function, args)
        except WorkerDied:
            if self._workers:
                await self._replace(worker)
            raise

    async def close(self, timeout: float = 10.0) -> None:
        workers, self._workers = self._workers, []
        await asyncio.gather(*(worker.stop(timeout) for worker in workers))

    def _least_busy(self) -> _Worker:
        if not self._workers:
            raise PoolClosed("the decode workers have stopped")
        return min(self._workers, key=lambda w: len(w.pending))

    async def _replace(self, dead: _Worker) -> _Worker:
        if dead not in self._workers:  # another call already replaced it, or the pool closed
            return self._least_busy()
        log.warning("decode worker %d died; starting a new one", dead.proc.pid)
        self.restarts += 1
        fresh = await self._spawn()
        if dead not in self._workers:  # the pool closed while the new worker started
            await fresh.stop(timeout=1.0)
            raise PoolClosed("the decode workers have stopped")
        self._workers[self._workers.index(dead)] = fresh
        return fresh

    @staticmethod
    async def _spawn() -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", __name__, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=PIPE_BYTES,
        )
        return _Worker(proc)


def _widen(pipe: Any) -> None:
    """A 64 KiB pipe moves a 1 MiB body in sixteen wake-ups of each side; a wider one in one."""
    try:
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (AttributeError, OSError):  # not Linux, or over /proc/sys/fs/pipe-max-size
        pass


def _serve(stdin: Any, stdout: Any) -> None:
    """The worker's loop: answer calls until stdin ends."""
    while header := stdin.read(_HEADER.size):
        (size,) = _HEADER.unpack(header)
        try:
            function, args = pickle.loads(stdin.read(size))
            outcome: tuple[int, Any] = (_OK, function(*args))
        except Exception as err:  # the caller gets it, as ProcessPoolExecutor would
            outcome = (_ERROR, err)
        try:
            payload = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:  # noqa: BLE001 - an unpicklable result or exception
            payload = pickle.dumps((_ERROR, RuntimeError(f"unpicklable outcome: {err!r}")))
        stdout.write(_HEADER.pack(len(payload)))
        stdout.write(payload)
        stdout.flush()


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group; the sink, not its workers, decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but answers may reach the pipe
    for pipe in (sys.stdin.buffer, answers):
        _widen(pipe)
    _serve(sys.stdin.buffer, answers)
