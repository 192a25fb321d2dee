"""A body over server.max_body_bytes: 413, and _rejected keeps its first 64 KiB, its length and
its sha256, read as it streams (with or without a Content-Length), never held whole."""

from __future__ import annotations

import hashlib
from typing import Iterator

import pytest
import requests

from conftest import StartLocal, read_json

LIMIT = 64 * 1024


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_oversize_body_is_refused_and_identified(local_sink: StartLocal, framing: str) -> None:
    sink = local_sink(env={"ARCHIVER_SERVER_MAX_BODY_BYTES": str(LIMIT)})
    body = b"".join(b'{"message": "line %d"}\n' % n for n in range(60_000))  # ~1.4 MB, 20x the limit

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 10_000):
            yield body[start:start + 10_000]

    data = body if framing == "content-length" else chunks()
    response = requests.post(f"{sink.url}/app", data=data, timeout=30)
    assert response.status_code == 413 and "over the limit" in response.text
    assert sink.post("/app", b'{"message": "after"}').status_code == 200
    sink.stop()
    assert [r["message"] for r in read_json(sink.data_dir, "app")] == ["after"]
    (rejected,) = [r["fields"] for r in read_json(sink.data_dir, "_rejected")]
    assert rejected["raw"].encode() == body[:64 * 1024] and rejected["raw_bytes"] == 64 * 1024
    assert (rejected["body_bytes"], rejected["body_sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    assert rejected["body_complete"] is True
