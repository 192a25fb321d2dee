"""Bad input gets its documented 4xx with a reason, the sink stays up, good records sent in
between are archived, and the raw bad bytes are kept in _rejected."""

from __future__ import annotations

import base64
import gzip
import socket
from urllib.parse import urlsplit

import requests

from conftest import StartLocal, read_json

MAX_BODY = 64 * 1024
GOOD_FORM = "name=app&msg=good+%s&args=%28{n}%2C%29"

# (label, method, path, body, headers, status, reason fragment, raw body kept in _rejected)
CASES = [
    ("malformed form", "POST", "/app", b"this is not a form", {}, 400, "malformed form body", True),
    ("form without value", "POST", "/app", b"a=1&b", {}, 400, "malformed form body", True),
    ("invalid JSON", "POST", "/app", b'{"message": "x", ', {}, 400, "invalid JSON", True),
    ("invalid JSON lines", "POST", "/app", b"{oops}\n{nope}", {}, 400, "invalid JSON", True),
    ("truncated gzip", "POST", "/app", gzip.compress(b'{"message": "x"}' * 50)[:40],
     {"Content-Encoding": "gzip"}, 400, "truncated gzip", True),
    ("gzip bomb", "POST", "/app", gzip.compress(b"a" * (MAX_BODY * 8)), {}, 413, "decompresses to more", True),
    ("non-UTF-8 form", "POST", "/app", b"msg=caf\xe9+au+lait", {}, 400, "not valid UTF-8", True),
    ("non-UTF-8 JSON", "POST", "/app", b'{"message": "caf\xe9"}', {}, 400, "invalid JSON", True),
    ("bad stream name", "POST", "/bad%20name", b"msg=x", {}, 400, "invalid stream name", True),
    ("traversal stream name", "POST", "/..%2F..%2Fetc", b"msg=x", {}, 400, "invalid stream name", True),
    ("nested stream path", "POST", "/a/b", b"msg=x", {}, 400, "invalid stream name", True),
    ("empty body", "POST", "/app", b"", {}, 400, "empty body", True),
    ("GET without record", "GET", "/app", b"", {}, 400, "query string", True),
    ("oversize body", "POST", "/app", b"msg=" + b"x" * (MAX_BODY + 10), {}, 413, "over the limit", False),
    ("JSON scalar", "POST", "/app", b"[1, 2]", {}, 200, "", False),  # a batch: elements rejected, 200
]


def _send_raw(url: str, request: bytes) -> bytes:
    """For bodies requests would fix up: send bytes as they are and read the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as conn:
        conn.sendall(request)
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_bad_input_is_refused_clearly_and_kept(local_sink: StartLocal) -> None:
    sink = local_sink(env={"ARCHIVER_SERVER_MAX_BODY_BYTES": str(MAX_BODY),
                                 "ARCHIVER_SERVER_MAX_DECODED_BYTES": str(MAX_BODY * 4)})
    good = 0
    for label, method, path, body, headers, status, reason, _ in CASES:
        response = requests.request(method, sink.url + path, data=body, headers=headers, timeout=30)
        assert response.status_code == status, (label, response.text)
        assert reason in response.text, (label, response.text)
        # the sink is still up and archives a good record right after
        assert sink.post("/app", GOOD_FORM.format(n=good)).text == "ok\n"
        good += 1
    # A body that ends early: the client closes after half of the declared bytes.
    answer = _send_raw(sink.url, b"POST /app HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nmsg=half")
    assert answer == b"" or b" 400 " in answer.split(b"\r\n")[0]
    assert sink.post("/app", GOOD_FORM.format(n=good)).text == "ok\n"
    good += 1
    assert requests.get(sink.url + "/_health", timeout=10).status_code == 200

    sink.stop()
    records = read_json(sink.data_dir)
    messages = {r["message"] for r in records if r["stream"] == "app"}
    assert messages == {f"good {n}" for n in range(good)}
    rejected = [r for r in records if r["stream"] == "_rejected"]
    kept = [_raw(r) for r in rejected]
    for label, _, _, body, _, _, _, raw_kept in CASES:
        if raw_kept and body:
            assert body in kept, label
    reasons = " | ".join(r["fields"]["reason"] for r in rejected)
    for label, _, _, _, _, status, reason, _ in CASES:
        if status != 200:
            assert reason in reasons, label
    assert sum(1 for r in rejected if r["fields"].get("raw") in ("1", "2")) == 2  # the batch's scalars


def _raw(record: dict) -> bytes:
    fields = record["fields"]
    if fields["raw_encoding"] == "base64":
        return base64.b64decode(fields["raw"])
    return fields["raw"].encode()


def test_full_spool_answers_503_with_retry_after(local_sink: StartLocal) -> None:
    sink = local_sink(env={"ARCHIVER_SPOOL_MAX_BYTES": "2000", "ARCHIVER_SPOOL_RETRY_AFTER": "7s"})
    accepted = 0
    response = None
    for n in range(100):
        response = sink.post("/app", GOOD_FORM.format(n=n))
        if response.status_code != 200:
            break
        accepted += 1
    assert response is not None and response.status_code == 503
    assert response.headers["Retry-After"] == "7" and "spool is full" in response.text
    assert requests.get(sink.url + "/_health", timeout=10).status_code == 503
    sink.stop()
    messages = [r["message"] for r in read_json(sink.data_dir, "app")]
    assert sorted(messages) == sorted(f"good {n}" for n in range(accepted))
