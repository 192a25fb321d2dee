"""The hot path (ingest/hotpath.py) serves the ingest routes itself and hands every other
route to aiohttp, with the HTTP contract intact on both sides of the hand-over."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

from archiver.ingest.http import RECEIVER_KEY
from archiver.ingest.receive import Answer, Incoming
from conftest import LocalSink, StartLocal, read_json

AIOHTTP = b"Server: Python/"  # aiohttp names itself in every answer; the hot path does not


@pytest.fixture
def sink(local_sink: StartLocal) -> LocalSink:
    return local_sink()


def connect(sink: LocalSink) -> socket.socket:
    url = urlsplit(sink.url)
    return socket.create_connection((url.hostname, url.port), timeout=30)


def post(path: str, body: bytes, *headers: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def answers(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` whole answers (each with a Content-Length) read from ``sock``."""
    data, found = b"", []
    while len(found) < count:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")))
            if len(rest) >= length:
                found.append(head + sep + rest[:length])
                data = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(found)} answers: {data!r}"
        data += chunk
    return found


def messages(sink: LocalSink, stream: str) -> list[str]:
    """What ``sink`` archived in ``stream``, once stopped (sealed)."""
    sink.stop()
    return [record["message"] for record in read_json(sink.data_dir, stream)]


def test_ingest_is_served_by_the_hot_path_and_other_routes_by_aiohttp_on_one_connection(sink: LocalSink) -> None:
    with connect(sink) as sock:
        sock.sendall(post("/hot1", b"msg=one"))
        (first,) = answers(sock, 1)
        sock.sendall(b"GET /_health HTTP/1.1\r\nHost: x\r\n\r\n")
        (health,) = answers(sock, 1)
        sock.sendall(post("/hot1", b"msg=two"))  # on the connection aiohttp now owns
        (last,) = answers(sock, 1)
    assert first.startswith(b"HTTP/1.1 200 OK") and first.endswith(b"\r\n\r\nok\n") and AIOHTTP not in first
    assert health.startswith(b"HTTP/1.1 200") and AIOHTTP in health
    assert last.startswith(b"HTTP/1.1 200") and AIOHTTP in last
    assert messages(sink, "hot1") == ["one", "two"]


def test_pipelined_requests_are_answered_in_order(sink: LocalSink) -> None:
    with connect(sink) as sock:
        sock.sendall(post("/hot2", b"msg=a") + post("/hot2", b"msg=b")
                     + b"GET /hot2?msg=c HTTP/1.1\r\nHost: x\r\n\r\n" + post("/_status", b""))
        found = answers(sock, 4)
    assert [answer.split(b"\r\n")[0] for answer in found] == [b"HTTP/1.1 200 OK"] * 3 + [b"HTTP/1.1 400 Bad Request"]
    assert sink.counters.responses == {200: 3, 400: 1}
    assert messages(sink, "hot2") == ["a", "b", "c"]
    (kept,) = read_json(sink.data_dir, "_rejected")  # the 400 is the sink's own: kept, as unpipelined
    assert "other routes" in kept["message"] and kept["fields"]["target_stream"] == "_status"


def test_bytes_that_arrive_while_a_hand_over_waits_go_to_aiohttp(sink: LocalSink, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request for another route waits for the answers owed before it; what arrives after its
    first read waits with it, though answering the requests before it resumes reading."""
    receiver, gate = sink.app[RECEIVER_KEY], threading.Event()
    receive = receiver.receive

    async def gated(request: Incoming) -> Answer:
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 30)
        return await receive(request)

    monkeypatch.setattr(receiver, "receive", gated)
    with connect(sink) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in (post("/hot9", b"msg=a") + post("/hot9", b"msg=b"), b"GET /_health HTTP/1.1\r\n", b"Host: x\r\n\r\n"):
            sock.sendall(piece)
            time.sleep(0.05)  # each piece its own read on the sink's side
        gate.set()
        found = answers(sock, 3)
    assert [answer.split(b"\r\n")[0] for answer in found] == [b"HTTP/1.1 200 OK"] * 3
    assert found[2].endswith(b'{"status": "ok"}') and AIOHTTP in found[2]


def test_chunked_bodies_and_expect_continue(sink: LocalSink) -> None:
    with connect(sink) as sock:
        sock.sendall(b"POST /hot3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"4\r\nmsg=\r\n7\r\nchunked\r\n0\r\n\r\n")
        (chunked,) = answers(sock, 1)
        sock.sendall(post("/hot3", b"", "Expect: 100-continue")[:-2].replace(b"Content-Length: 0", b"Content-Length: 8")
                     + b"\r\n")
        assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"  # nothing sent until the sink asks
        sock.sendall(b"msg=cont")
        (continued,) = answers(sock, 1)
    assert chunked.startswith(b"HTTP/1.1 200") and continued.startswith(b"HTTP/1.1 200")
    assert messages(sink, "hot3") == ["chunked", "cont"]


def test_broken_framing_is_answered_kept_and_closes_the_connection(sink: LocalSink) -> None:
    with connect(sink) as sock:
        sock.sendall(b"POST /hot4 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"9\r\nmsg=cut\r\nzz\r\n")
        (answer,) = answers(sock, 1)
        assert sock.recv(4096) == b""
    assert answer.startswith(b"HTTP/1.1 400") and b"incomplete body" in answer
    sink.stop()
    (kept,) = read_json(sink.data_dir, "_rejected")
    assert kept["fields"]["raw"] == "msg=cut\r\n" and "incomplete body" in kept["message"]


def test_a_head_over_the_limits_is_refused(sink: LocalSink) -> None:
    long_line = sink.config.server.max_line_bytes
    for headers, reason in (([f"X-{n}: {n}" for n in range(200)], b"too many"),
                            ([f"X-Big: {'a' * long_line}"], b"longer than")):
        with connect(sink) as sock:
            sock.sendall(post("/hot5", b"msg=x", *headers))
            (answer,) = answers(sock, 1)
            assert sock.recv(4096) == b""
        assert answer.startswith(b"HTTP/1.1 400") and reason in answer
    assert messages(sink, "hot5") == []


def test_a_header_is_refused_as_it_grows_past_the_limit(sink: LocalSink) -> None:
    """llhttp hands a header over only once it ends: the sink counts it as it arrives, or one
    endless header would grow in memory, unanswered."""
    with connect(sink) as sock:
        sock.sendall(b"POST /hot5 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (sink.config.server.max_line_bytes + 1))
        (answer,) = answers(sock, 1)
        assert sock.recv(4096) == b""
    assert answer.startswith(b"HTTP/1.1 400") and b"server.max_line_bytes" in answer
    with connect(sink) as sock:  # a chunked body's trailer, after the body: the body is kept as cut
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"POST /hot5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nmsg=t\r\n0\r\nX-Big: ")
        time.sleep(0.05)  # the trailer's bytes arrive in reads of their own
        sock.sendall(b"a" * (sink.config.server.max_line_bytes + 1))
        (answer,) = answers(sock, 1)
        assert sock.recv(4096) == b""
    assert answer.startswith(b"HTTP/1.1 400") and b"incomplete body: a header is longer" in answer
    sink.stop()
    (kept,) = read_json(sink.data_dir, "_rejected")
    assert kept["fields"]["raw"] == "msg=t"


def test_requests_before_a_parser_error_are_answered_then_its_400(sink: LocalSink) -> None:
    refused = requests.get(sink.url + "/_status", timeout=10).json()["responses"].get("400", 0)
    with connect(sink) as sock:  # a head llhttp refuses, behind two requests
        sock.sendall(post("/hot10", b"msg=a") + post("/hot10", b"msg=b") + b"BREW /hot10 HTTP/1.1\r\n\r\n")
        found = answers(sock, 3)
        assert sock.recv(4096) == b""
    assert [answer.split(b"\r\n")[0] for answer in found] == [b"HTTP/1.1 200 OK"] * 2 + [b"HTTP/1.1 400 Bad Request"]
    assert b"Connection: close" in found[2] and b"Connection: close" not in found[1]
    assert requests.get(sink.url + "/_status", timeout=10).json()["responses"]["400"] == refused + 1
    with connect(sink) as sock:  # a body whose framing breaks, behind a request
        sock.sendall(post("/hot10", b"msg=c") + b"POST /hot10 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nmsg=d\r\nzz\r\n")
        found = answers(sock, 2)
        assert sock.recv(4096) == b""
    assert found[0].startswith(b"HTTP/1.1 200") and found[1].startswith(b"HTTP/1.1 400") and b"incomplete body" in found[1]
    assert messages(sink, "hot10") == ["a", "b", "c"]
    (kept,) = read_json(sink.data_dir, "_rejected")
    assert kept["fields"]["raw"] == "msg=d" and "incomplete body" in kept["message"]


def test_an_upgrade_request_is_served_as_before(sink: LocalSink) -> None:
    """curl --http2 asks for h2c; llhttp stops at the body of an upgrade request, so aiohttp
    serves it whole, as it served every request before the hot path."""
    with connect(sink) as sock:
        sock.sendall(post("/hot6", b"msg=first"))
        answers(sock, 1)
        sock.sendall(post("/hot6", b"msg=h2c", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
                          "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA"))
        (answer,) = answers(sock, 1)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok\n")
    assert messages(sink, "hot6") == ["first", "h2c"]


def test_a_body_answered_early_is_read_to_its_end_before_the_connection_closes(local_sink: StartLocal) -> None:
    """A 401 comes before the body is read; closing then with unread bytes would reset the
    connection under a client still sending, which may lose the answer."""
    sink = local_sink({"ARCHIVER_AUTH_TOKENS": "t0ken"})
    body = b"msg=" + b"x" * (4 * 1024 * 1024)
    with connect(sink) as sock:
        sock.sendall(post("/hot7", b"")[: -len("\r\n\r\n")].replace(b"Content-Length: 0", b"Content-Length: %d" % len(body))
                     + b"\r\n\r\n" + body[:65536])
        (answer,) = answers(sock, 1)
        sock.sendall(body[65536:])  # no reset: the sink reads what it refused
        assert sock.recv(4096) == b""  # then closes
    assert answer.startswith(b"HTTP/1.1 401") and b"Connection: close" in answer


def test_a_request_line_in_pieces_is_parsed_whole(sink: LocalSink) -> None:
    """Its pieces are parsed together, inside the parser's error handling: a bad byte in an
    early piece gets a 400 like any other."""
    found = []
    for request in (post("/hot8", b"msg=pieces"), post("/hot8", b"msg=bad").replace(b"/hot8", b"/h\x00t8")):
        with connect(sink) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for piece in (request[:3], request[3:9], request[9:]):
                sock.sendall(piece)
                time.sleep(0.05)  # each piece its own read on the sink's side
            found += answers(sock, 1)
    assert found[0].startswith(b"HTTP/1.1 200") and found[1].startswith(b"HTTP/1.1 400")
    assert messages(sink, "hot8") == ["pieces"]
