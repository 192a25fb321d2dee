"""`archiver cat --follow`: print a running sink's records as they become durable, until Ctrl-C."""

from __future__ import annotations

import sys
import time
from typing import Iterator

import orjson

from archiver.read.classic import classic_line
from archiver.read.follow import Follower, Watermark
from archiver.read.reader import Archive, Filters

POLL_SECONDS = 0.5


def follow_chunks(archive: Archive, wanted: Filters, as_json: bool, watermark: Watermark) -> Iterator[bytes]:
    """What `cat` prints, then every new record, flushed after each poll; ends at Ctrl-C."""
    follower = Follower(archive, wanted, watermark)
    try:
        while True:
            for line in follower.poll():
                yield line if as_json else classic_line(orjson.loads(line)).encode()
            sys.stdout.buffer.flush()
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        return
