"""Authentication, TLS, loopback defaults, admin access, and capabilities kept secret."""

from __future__ import annotations

import gzip
import http.server
import logging
import logging.handlers
import random
import socket
import ssl
import stat
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import orjson
import pytest
import requests

from archiver.app.config import load_config
from archiver.app.grid import LocalGrid
from conftest import Sink, StartLocal, archiver_cli, cat_json, read_json

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # stdlib HTTPHandler


def raw_post(path: bytes, body: bytes, *headers: bytes) -> bytes:
    head = b"".join(header + b"\r\n" for header in headers)
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + head
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def raw_answer(url: str, request: bytes, source: str | None = None) -> tuple[int, bytes]:
    """Send ``request`` byte for byte (no client tidies its path or headers); the status and
    the whole answer, headers included. ``request`` asks the sink to close after answering."""
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    with socket.create_connection((parts.hostname, parts.port), timeout=30,
                                  source_address=(source, 0) if source else None) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def sink_log(sink: Sink) -> str:
    return (sink.data_dir.parent / f"{sink.data_dir.name}.log").read_text(errors="replace")


def spool_texts(data_dir: Path) -> dict[str, bytes]:
    """Every file in the spool as text: sealed segments decompressed, open ones and search
    indexes (whose only text, the loggers and levels, is stored plain) as they are."""
    texts = {}
    for path in sorted((data_dir / "spool").rglob("*")):
        if path.is_file():
            assert path.name.endswith((".jsonl", ".jsonl.gz", ".idx")), f"cannot read {path} as text"
            data = path.read_bytes()
            texts[str(path.relative_to(data_dir))] = gzip.decompress(data) if path.suffix == ".gz" else data
    return texts


def _log(handler: logging.Handler, message: str) -> None:
    logger = logging.getLogger(f"sec.{time.monotonic_ns()}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.warning(message)
    logger.removeHandler(handler)


def test_tokens_and_basic_credentials(local_sink: StartLocal, caplog: pytest.LogCaptureFixture) -> None:
    sink = local_sink(env={"ARCHIVER_AUTH_TOKENS": "t0ken-a,t0ken-b", "ARCHIVER_AUTH_BASIC": "alice:s3cret"})
    assert requests.post(f"{sink.url}/app", data="msg=anonymous", timeout=10).status_code == 401
    assert requests.post(f"{sink.url}/app", data="msg=wrong", headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
    assert requests.get(f"{sink.url}/_status", timeout=10).status_code == 401
    assert requests.get(f"{sink.url}/_health", timeout=10).status_code == 200
    ok = requests.post(f"{sink.url}/app", data="msg=with+token", headers={"Authorization": "Bearer t0ken-b"}, timeout=10)
    assert ok.status_code == 200
    host = sink.url.split("://")[1]
    _log(logging.handlers.HTTPHandler(host, "/app", method="POST", credentials=("alice", "s3cret")), "with basic")
    _log(logging.handlers.HTTPHandler(host, "/app", method="POST", credentials=("alice", "guess")), "bad basic")
    # Header values that are not UTF-8 (aiohttp hands them over surrogate-escaped): a 401 like
    # any other wrong credential, never a 500. A valid token with a stray byte is still wrong.
    for header in (b"Bearer \xff\xfe", b"Basic \xc3\x28", b"Bearer t0ken-b\xe9", b"\x80\x81"):
        for path in (b"/app", b"/_admin/flush"):
            status, answer = raw_answer(sink.url, raw_post(path, b"msg=odd+header", b"Authorization: " + header))
            assert status == 401, (header, path, answer)
            assert b"WWW-Authenticate: Basic" in answer and b"error: authentication required" in answer, answer
    assert requests.get(f"{sink.url}/_status", headers={"Authorization": "Bearer t0ken-a"}, timeout=10).json()["responses"]["401"] == 12
    sink.stop()
    assert not [record for record in caplog.records if record.exc_info]  # the sink logged no traceback
    assert sorted(r["message"] for r in read_json(sink.data_dir)) == ["with basic", "with token"]  # 401 bodies are not kept


def test_tls_with_httphandler_secure(start_sink, tls_files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink(None, env={"ARCHIVER_SERVER_TLS_CERT": str(tls_files["cert"]),
                                 "ARCHIVER_SERVER_TLS_KEY": str(tls_files["key"]), "ARCHIVER_AUTH_BASIC": "bob:pw"})
    assert sink.url.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=str(tls_files["ca"]))
    host = sink.url.split("://")[1]
    _log(logging.handlers.HTTPHandler(host, "/secure", method="POST", secure=True, credentials=("bob", "pw"),
                                      context=context), "over tls")
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(f"{sink.url}/secure", data="msg=unverified", timeout=10)  # the default CAs do not know it
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(f"http://{host}/secure", data="msg=plain", timeout=10)
    assert sink.stop() == 0
    assert [r["message"] for r in cat_json(sink.data_dir)] == ["over tls"]


def test_loopback_by_default_and_admin_from_elsewhere_needs_the_token(start_sink) -> None:  # type: ignore[no-untyped-def]
    assert load_config().server.host == "127.0.0.1" and load_config().tcp.host == "127.0.0.1"
    sink = start_sink(None, "--host", "127.0.0.2", env={"ARCHIVER_ADMIN_TOKEN": "adm1n"})
    assert sink.url.startswith("http://127.0.0.2:")
    def from_127_0_0_2(**kwargs: object) -> requests.Response:
        import urllib3

        pool = urllib3.HTTPConnectionPool("127.0.0.2", int(sink.url.rsplit(":", 1)[1]), source_address=("127.0.0.2", 0))
        return pool.request("POST", "/_admin/flush", **kwargs)  # type: ignore[arg-type,return-value]

    assert from_127_0_0_2().status == 403
    assert from_127_0_0_2(headers={"Authorization": "Bearer adm1n"}).status == 200
    odd = raw_post(b"/_admin/flush", b"", b"Authorization: Bearer adm1n\xff")  # not UTF-8: refused, not a 500
    status, answer = raw_answer(sink.url, odd, source="127.0.0.2")
    assert status == 403 and b"error: /_admin is for localhost" in answer, answer


# Requests that get error answers, sent raw so that no client normalises `..` out of the path.
ERROR_REQUESTS: list[tuple[bytes, int, bytes]] = [
    (raw_post(b"/app/../../x", b"msg=escape"), 400, b"invalid stream name 'app/../../x'"),
    (raw_post(b"/../../x", b"msg=escape"), 400, b"invalid stream name '../../x'"),
    (raw_post(b"/%2e%2e/%2e%2e/x", b"msg=escape"), 400, b"invalid stream name '../../x'"),
    (raw_post(b"/.hidden", b"msg=x"), 400, b"invalid stream name '.hidden'"),
    (raw_post(b"/app", b"{not json"), 400, b"invalid JSON"),
    (raw_post(b"/app", b"msg=\xff\xfe"), 400, b"form body is not valid UTF-8"),
    (raw_post(b"/app", b"\x1f\x8bjunk"), 400, b"corrupt gzip body"),
    (raw_post(b"/app", b""), 400, b"empty body"),
    (b"GET /app HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, b"GET needs a urlencoded record"),
    (raw_post(b"/_nothing", b"msg=x"), 404, b"/_nothing is not a known reserved path"),
]


def test_write_caps_never_leave_the_manifest(start_sink, grid1: LocalGrid, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {"ARCHIVER_STORE_URL": "tahoe://" + grid1.gateway_url.split("://")[1], "ARCHIVER_UPLOADER_INTERVAL": "1s",
           "ARCHIVER_UPLOADER_PUBLISH_DELAY": "100ms"}
    sink = start_sink(tmp_path / "data", env=env)
    outputs: list[bytes] = []  # every error answer, then every other output
    for n in range(5):
        for request, status, reason in ERROR_REQUESTS:
            got, answer = raw_answer(sink.url, request)
            assert got == status and reason in answer, answer
            outputs.append(answer)
        assert requests.post(f"{sink.url}/app", data=f"msg=record+{n}", timeout=10).status_code == 200
    got, answer = raw_answer(sink.url, raw_post(b"/_admin/flush", b""), source="127.0.0.2")  # not loopback, no token
    assert got == 403, answer
    outputs.append(answer)
    archiver_cli("flush", "--data-dir", str(sink.data_dir))
    commands = [
        ("status", "--json"), ("status",), ("manifest", "export"), ("ls", "--json"), ("ls", "--json", "--stream", "_rejected"),
        ("cat", "--json", "--stream", "_rejected"), ("verify", "--json"),
    ]
    for command in commands:
        result = archiver_cli(*command, "--data-dir", str(sink.data_dir))
        outputs += [result.stdout, result.stderr]
    outputs += [requests.get(f"{sink.url}{path}", timeout=10).content for path in ("/_status", "/_metrics", "/")]
    outputs.append((sink.data_dir / "sink.json").read_bytes())
    secrets = orjson.loads(archiver_cli("manifest", "export", "--include-write-caps", "--data-dir", str(sink.data_dir)).stdout)
    assert sink.stop() == 0
    write_caps = [secrets["root"]["write_cap"]] + [d["write_cap"] for d in secrets["dirs"].values()]
    assert len(write_caps) > 4 and all(cap.startswith("URI:DIR2:") for cap in write_caps)
    from archiver.store.tahoe import TahoeFS

    reader = TahoeFS(grid1.gateway_url, secrets["root"]["read_cap"])
    published = b"".join(reader.readbytes(path) for path in reader.walk.files("/_manifest"))
    assert published
    spool = spool_texts(sink.data_dir)
    rejected = b"".join(text for name, text in spool.items() if "/_rejected/" in name)
    for _, _, reason in ERROR_REQUESTS[:-1]:  # the grep reads what the refusals kept, decompressed
        assert reason in rejected, reason
    outputs += [published, sink_log(sink).encode(), *spool.values()]
    for cap in write_caps:
        secret = cap.split(":")[2].encode()
        assert not any(secret in output for output in outputs), cap[:16]
    assert stat.S_IMODE(sink.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((sink.data_dir / "manifest.sqlite").stat().st_mode) == 0o600
    spool_dir = (sink.data_dir / "spool").resolve()
    assert all(spool_dir in p.resolve().parents for p in (sink.data_dir / "spool").rglob("*"))
    assert not (tmp_path / "x").exists() and not (sink.data_dir / "x").exists()


class _EchoingNode(http.server.BaseHTTPRequestHandler):
    """A broken Tahoe node whose every answer is an error quoting the URL it was asked for,
    write cap included: what the uploader reports must have it cut out."""

    def _fail(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while size := int(self.rfile.readline().split(b";")[0], 16):
                self.rfile.read(size + 2)
            self.rfile.readline()
        else:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = f"Internal Server Error: cannot {self.command} {unquote(self.path)}\n".encode()
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = _fail

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_root_write_cap_stays_out_of_upload_errors(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Every request to the store fails with an error quoting its URL, which holds the root
    write cap given in store.url: no output that reports the failures shows the cap."""
    base32 = "abcdefghijklmnopqrstuvwxyz234567"
    secret = "".join(random.choice(base32) for _ in range(26))
    cap = f"URI:DIR2:{secret}:" + "".join(random.choice(base32) for _ in range(52))
    node = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoingNode)
    serving = threading.Thread(target=node.serve_forever, daemon=True)
    serving.start()
    try:
        sink = start_sink(tmp_path / "data", env={"ARCHIVER_STORE_URL": f"tahoe://127.0.0.1:{node.server_port}/{cap}",
                                                  "ARCHIVER_UPLOADER_INTERVAL": "1s"})
        assert requests.post(f"{sink.url}/app", data="msg=kept+locally", timeout=10).status_code == 200
        flushed = archiver_cli("flush", "--data-dir", str(sink.data_dir), check=False)
        assert flushed.returncode == 1 and b"failed 1" in flushed.stdout, flushed
        status = archiver_cli("status", "--json", "--data-dir", str(sink.data_dir))
        last_error = orjson.loads(status.stdout)["last_error"]
        assert "Internal Server Error: cannot" in last_error and "/uri/URI:DIR2:" in last_error  # quoted, then cut
        outputs = [flushed.stdout, flushed.stderr, status.stdout, status.stderr]
        for command in (("status",), ("manifest", "export"), ("ls", "--json")):
            result = archiver_cli(*command, "--data-dir", str(sink.data_dir), check=False)
            outputs += [result.stdout, result.stderr]
        outputs += [requests.get(f"{sink.url}{path}", timeout=10).content for path in ("/_status", "/_metrics", "/")]
        assert sink.stop() == 0
    finally:
        node.shutdown()
        node.server_close()
    log = sink_log(sink)
    assert "Internal Server Error: cannot" in log
    outputs += [log.encode(), *spool_texts(sink.data_dir).values()]
    assert not any(secret.encode() in output for output in outputs)
