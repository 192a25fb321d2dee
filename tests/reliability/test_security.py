"""Authentication, TLS, loopback defaults, admin access, and capabilities kept secret."""

from __future__ import annotations

import logging
import logging.handlers
import ssl
import stat
import subprocess
import time
from pathlib import Path

import orjson
import pytest
import requests

from archiver.config import load_config
from archiver.grid import LocalGrid
from conftest import archiver_cli, cat_json

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # stdlib HTTPHandler


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test CA and a server certificate for 127.0.0.1 signed by it (openssl)."""
    d = tmp_path_factory.mktemp("tls")
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=archiver test CA",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(d / "server.key"),
        "-out", str(d / "server.csr"))
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
        "-CAcreateserial", "-days", "2", "-extfile", str(d / "san.cnf"), "-out", str(d / "server.pem"))
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


def _log(handler: logging.Handler, message: str) -> None:
    logger = logging.getLogger(f"sec.{time.monotonic_ns()}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.warning(message)
    logger.removeHandler(handler)


def test_tokens_and_basic_credentials(start_sink) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink(None, env={"ARCHIVER_AUTH_TOKENS": "t0ken-a,t0ken-b", "ARCHIVER_AUTH_BASIC": "alice:s3cret"})
    assert requests.post(f"{sink.url}/app", data="msg=anonymous", timeout=10).status_code == 401
    assert requests.post(f"{sink.url}/app", data="msg=wrong", headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
    assert requests.get(f"{sink.url}/_status", timeout=10).status_code == 401
    assert requests.get(f"{sink.url}/_health", timeout=10).status_code == 200
    ok = requests.post(f"{sink.url}/app", data="msg=with+token", headers={"Authorization": "Bearer t0ken-b"}, timeout=10)
    assert ok.status_code == 200
    host = sink.url.split("://")[1]
    _log(logging.handlers.HTTPHandler(host, "/app", method="POST", credentials=("alice", "s3cret")), "with basic")
    _log(logging.handlers.HTTPHandler(host, "/app", method="POST", credentials=("alice", "guess")), "bad basic")
    assert sink.stop() == 0
    assert sorted(r["message"] for r in cat_json(sink.data_dir)) == ["with basic", "with token"]  # 401 bodies are not kept


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


def test_write_caps_never_leave_the_manifest(start_sink, grid1: LocalGrid, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {"ARCHIVER_STORE_URL": "tahoe://" + grid1.gateway_url.split("://")[1], "ARCHIVER_UPLOADER_INTERVAL": "1s",
           "ARCHIVER_UPLOADER_PUBLISH_DELAY": "100ms"}
    sink = start_sink(tmp_path / "data", env=env)
    for n in range(5):
        requests.post(f"{sink.url}/app/../../x", data=f"msg={n}", timeout=10)  # errors too
        requests.post(f"{sink.url}/app", data=f"msg=record+{n}", timeout=10)
    archiver_cli("flush", "--data-dir", str(sink.data_dir))
    outputs = [
        archiver_cli("status", "--json", "--data-dir", str(sink.data_dir)).stdout,
        archiver_cli("status", "--data-dir", str(sink.data_dir)).stdout,
        archiver_cli("manifest", "export", "--data-dir", str(sink.data_dir)).stdout,
        archiver_cli("ls", "--json", "--data-dir", str(sink.data_dir)).stdout,
        requests.get(f"{sink.url}/_status", timeout=10).content,
        requests.get(f"{sink.url}/_metrics", timeout=10).content,
        requests.get(f"{sink.url}/", timeout=10).content,
    ]
    secrets = orjson.loads(archiver_cli("manifest", "export", "--include-write-caps", "--data-dir", str(sink.data_dir)).stdout)
    assert sink.stop() == 0
    write_caps = [secrets["root"]["write_cap"]] + [d["write_cap"] for d in secrets["dirs"].values()]
    assert len(write_caps) > 4 and all(cap.startswith("URI:DIR2:") for cap in write_caps)
    from archiver.store.tahoe import TahoeFS

    published = TahoeFS(grid1.gateway_url, secrets["root"]["read_cap"]).readbytes(f"/_manifest/{secrets['sink_id']}.json")
    outputs += [published, sink.log_text().encode()]
    outputs += [p.read_bytes() for p in (sink.data_dir / "spool" / "sealed" / "_rejected").glob("*")]
    for cap in write_caps:
        secret = cap.split(":")[2].encode()
        assert not any(secret in output for output in outputs), cap[:16]
    assert stat.S_IMODE(sink.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((sink.data_dir / "manifest.sqlite").stat().st_mode) == 0o600
    spool = (sink.data_dir / "spool").resolve()
    assert all(spool in p.resolve().parents for p in (sink.data_dir / "spool").rglob("*"))
    assert not (tmp_path / "x").exists() and not (sink.data_dir / "x").exists()
