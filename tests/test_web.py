"""The archive browser without a browser: its pages, searches, downloads and guards, through
aiohttp's test client over a data dir, and the sink's routes around the site it mounts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson
import pytest
import requests
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

import archiver.web.site as site
from archiver.app.cli import main as cli_main
from archiver.format.layout import DataDir
from archiver.ingest.auth import Authenticator
from archiver.ingest.http import create_app
from archiver.read.reader import Filters, data_dir_archive, existing_data_dir
from archiver.web.search import Search, SearchError
from archiver.spool.rotation import RotationPolicy
from archiver.spool.writer import SegmentWriter
from archiver.web.site import PREFIX, create_site, standalone_app
from conftest import StartLocal
from test_reader import SAMPLE, T0, write_archive

TRACEBACK = 'Traceback (most recent call last):\n  File "pay.py", line 9, in charge\nZeroDivisionError: division by zero'
RECORDS = [dict(r) for r in SAMPLE] + [
    {"created": T0 + 70, "level": "ERROR", "logger": "app.pay", "message": "payment failed", "exc_text": TRACEBACK,
     "user": "alice", "order": 42},
    {"created": T0 + 7200, "level": "INFO", "logger": "app.pay", "message": "payment ok", "user": "bob"},
]
Call = Callable[[TestClient], Awaitable[Any]]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("web") / "data"
    write_archive(path, [dict(r) for r in RECORDS])
    return path


def browse(data_dir: Path, call: Call, token: str | None = None) -> Any:
    """``call`` with a test client of `archiver web`'s application over ``data_dir``."""

    async def main() -> Any:
        with data_dir_archive(existing_data_dir(data_dir)) as archive:
            async with TestClient(TestServer(standalone_app(archive, token))) as client:
                return await call(client)

    return asyncio.run(main())


def get_text(path: str, **headers: str) -> Call:
    async def call(client: TestClient) -> tuple[int, str]:
        response = await client.get(path, headers=headers, allow_redirects=False)
        return response.status, await response.text()

    return call


def test_the_home_page_shows_each_stream_with_its_span_and_hourly_volume(data_dir: Path) -> None:
    status, page = browse(data_dir, get_text("/_web/"))
    assert status == 200
    assert 'href="/_web/streams/app"' in page and 'href="/_web/streams/audit"' in page
    assert "2026-11-23T21:00:00.000000Z" in page and "2026-11-23T23:00:00.000000Z" in page  # app's span
    chart = page.split('id="volume-data">', 1)[1].split("</script>", 1)[0]
    assert orjson.loads(chart) == {"app": {"2026-11-23T21": 8}, "audit": {"2026-11-23T21": 1}}
    assert browse(data_dir, get_text("/"))[0] == 303


def test_a_stream_page_lists_its_segments_and_each_downloads_as_stored(data_dir: Path) -> None:
    status, page = browse(data_dir, get_text("/_web/streams/app"))
    assert status == 200 and "<h2" in page and "2026-11-23" in page
    with data_dir_archive(existing_data_dir(data_dir)) as archive:
        rows = archive.segments("app")
    assert all(f'/_web/segments/{row.id}"' in page for row in rows)

    async def download(client: TestClient) -> tuple[bytes, str]:
        response = await client.get(f"/_web/segments/{rows[0].id}")
        return await response.read(), response.headers["Content-Disposition"]

    body, disposition = browse(data_dir, download)
    assert hashlib.sha256(body).hexdigest() == rows[0].sha256 and "attachment" in disposition
    assert browse(data_dir, get_text("/_web/segments/nope"))[0] == 404
    assert browse(data_dir, get_text("/_web/streams/nope"))[0] == 404


def messages_on(page: str) -> list[str]:
    return [line.split("</code>")[0].rsplit(" ", 2)[-1] for line in page.split("<summary><code>")[1:]]


@pytest.mark.parametrize(("query", "wanted"), [
    ("level=ERROR&text=failed", ["lost", "failed"]),
    ("logger=app.db*", ["ok", "lost", "down"]),
    ("field=user%3Dal*", ["failed"]),
    ("field=order%3D42&stream=app", ["failed"]),
    ("since=2026-11-23T22:00:00Z", ["ok"]),
    ("stream=audit", ["login"]),
])
def test_searches_filter_as_their_url_says(data_dir: Path, query: str, wanted: list[str]) -> None:
    status, page = browse(data_dir, get_text(f"/_web/search?{query}"))
    assert status == 200 and messages_on(page) == wanted


def test_a_found_record_opens_to_its_fields_and_traceback(data_dir: Path) -> None:
    page = browse(data_dir, get_text("/_web/search?text=payment+failed"))[1]
    assert "ZeroDivisionError: division by zero" in page and 'File &#34;pay.py&#34;, line 9' in page
    assert '<th scope="row">user</th><td><code>"alice"</code>' in page


def test_results_come_in_pages_with_links_that_keep_the_search(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(site, "PAGE_SIZE", 3)
    first = browse(data_dir, get_text("/_web/search?stream=app&level=INFO"))[1]
    assert messages_on(first) == ["ok", "lost", "down"] and 'rel="next"' in first
    assert 'href="/_web/search?stream=app&amp;level=INFO&amp;page=1"' in first
    second = browse(data_dir, get_text("/_web/search?stream=app&level=INFO&page=1"))[1]
    assert messages_on(second) == ["job", "lost", "failed"] and 'rel="prev"' in second


def test_a_search_survives_its_shared_url() -> None:
    search = Search("app", "2h", "", "ERROR", "app.*", "a b&c", (("user", "al*"), ("order", "42")), 2)
    query = search.query()
    from urllib.parse import parse_qs

    parsed = {key: values[-1] for key, values in parse_qs(query).items()}
    assert Search.from_query(parsed, parse_qs(query)["field"]) == search
    with pytest.raises(SearchError):
        Search.from_query({}, ["no-equals-sign"])


def test_a_bad_search_is_answered_with_why(data_dir: Path) -> None:
    status, page = browse(data_dir, get_text("/_web/search?since=yesterday-ish&text=kept"))
    assert status == 400 and 'role="alert"' in page and 'value="kept"' in page


def test_the_matches_download_as_ndjson_whatever_the_page(data_dir: Path) -> None:
    async def download(client: TestClient) -> bytes:
        response = await client.get("/_web/search.ndjson?level=ERROR&page=3")
        assert response.headers["Content-Type"] == "application/x-ndjson"
        return await response.read()

    body = browse(data_dir, download)
    with data_dir_archive(existing_data_dir(data_dir)) as archive:
        assert body == b"".join(archive.json_chunks(Filters(level="ERROR")))
    assert len(body.splitlines()) == 4


def test_the_tail_never_reads_further_back_than_its_window(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An old ``since`` would load the archive back to it into the sink: it counts from the
    window's start instead, and at most TAIL_MAX records are kept, the newest."""

    def tail(query: str) -> Call:
        async def call(client: TestClient) -> tuple[int, Any]:
            response = await client.get(f"/_web/tail.json?{query}")
            return response.status, await (response.json() if response.status == 200 else response.text())

        return call

    assert browse(data_dir, tail("since=2000"))[1] == {"records": []}  # every record is days older than the window
    assert browse(data_dir, tail("since=1970-01-01T00:00:00Z&stream=app"))[1] == {"records": []}
    assert browse(data_dir, tail("since=yesterday-ish"))[0] == 400
    monkeypatch.setattr(site, "TAIL_WINDOW", 10 * 365 * 86400.0)
    monkeypatch.setattr(site, "TAIL_MAX", 2)
    status, answer = browse(data_dir, tail("since=2000"))
    first, second = answer["records"]
    assert status == 200 and "payment failed" in first["line"] and "payment ok" in second["line"]


def sink_site(data_dir: Path, call: Call, peer: str, auth: Authenticator | None = None) -> Any:
    """``call`` with a test client of the sink's application with the site mounted as `archiver
    serve` mounts it, each request seen as coming from ``peer``."""

    @web.middleware
    async def from_peer(request: web.Request, handler: Any) -> web.StreamResponse:
        return await handler(request.clone(remote=peer))

    async def main() -> Any:
        writer = SegmentWriter(existing_data_dir(data_dir), "web", RotationPolicy(10**9, 10**9, 3600))
        with data_dir_archive(existing_data_dir(data_dir)) as archive:
            app = create_app(writer, auth=auth, site=(PREFIX, create_site(archive)))
            app.middlewares.insert(0, from_peer)
            async with TestClient(TestServer(app, host="127.0.0.1")) as client:
                return await call(client)

    return asyncio.run(main())


@pytest.mark.parametrize("path", ["/_web/", "/_web/search.ndjson", "/_web/tail.json", "/_web/static/site.js"])
def test_without_auth_the_sinks_site_answers_only_loopback(data_dir: Path, path: str) -> None:
    status, text = sink_site(data_dir, get_text(path), "203.0.113.9")
    assert status == 403 and "answers only localhost while [auth] has no credentials" in text
    assert sink_site(data_dir, get_text(path), "127.0.0.1")[0] == 200
    assert sink_site(data_dir, get_text(path), "::1")[0] == 200
    assert sink_site(data_dir, get_text("/_health"), "203.0.113.9")[0] == 200  # ingest's routes are not the site


def test_with_auth_the_sinks_credentials_read_its_site_from_anywhere(data_dir: Path) -> None:
    auth = Authenticator(tokens=["t0ken"])
    assert sink_site(data_dir, get_text("/_web/"), "203.0.113.9", auth)[0] == 401
    assert sink_site(data_dir, get_text("/_web/", Authorization="Bearer t0ken"), "203.0.113.9", auth)[0] == 200


def test_a_token_guards_the_standalone_site(data_dir: Path) -> None:
    """The test client is on loopback: a token is wanted from there too."""
    basic = base64.b64encode(b"anyone:s3cret").decode()
    assert browse(data_dir, get_text("/_web/"), token="s3cret")[0] == 401
    assert browse(data_dir, get_text("/_web/", Authorization="Bearer wrong"), token="s3cret")[0] == 401
    assert browse(data_dir, get_text("/_web/", Authorization="Bearer s3cret"), token="s3cret")[0] == 200
    assert browse(data_dir, get_text("/_web/", Authorization=f"Basic {basic}"), token="s3cret")[0] == 200


def test_archiver_web_binds_beyond_loopback_only_with_a_token(data_dir: Path) -> None:
    result = CliRunner().invoke(cli_main, ["web", "--archive", str(data_dir), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "--token" in result.output


def test_the_sink_sends_browsers_to_its_site_and_keeps_its_other_routes(local_sink: StartLocal) -> None:
    sink = local_sink({"ARCHIVER_AUTH_TOKENS": "t0ken"})
    auth = {"Authorization": "Bearer t0ken"}
    assert requests.get(sink.url + "/_web/", timeout=10).status_code == 401  # [auth] covers the site
    browser = requests.get(sink.url + "/", headers={**auth, "Accept": "text/html,*/*"}, timeout=10, allow_redirects=False)
    assert browser.status_code == 303 and browser.headers["Location"] == "/_web/"
    plain = requests.get(sink.url + "/", headers=auth, timeout=10)
    assert plain.headers["Content-Type"].startswith("text/plain") and "archiving log sink" in plain.text
    assert requests.get(sink.url + "/app?msg=via+GET", headers={**auth, "Accept": "text/html"}, timeout=10).text == "ok\n"
    tail = requests.get(sink.url + "/_web/tail.json?stream=app", headers=auth, timeout=10).json()
    assert [r["line"].split()[-2:] for r in tail["records"]] == [["via", "GET"]]
    assert requests.get(sink.url + "/_web/tail", headers=auth, timeout=10).status_code == 200
