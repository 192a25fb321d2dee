"""The archive browser in a real browser: Debian's chromium, headless, driven by Playwright
(never `playwright install`), over an archive read from a root read cap on a real Tahoe grid,
and the live tail of a running sink. Screenshots go to test-artifacts/web/; axe-core checks
every page for accessibility problems."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import orjson
import pytest
import requests

from archiver.format.manifest import open_for_reading
from conftest import ROOT, Sink, low_port, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from archiver.app.grid import LocalGrid

# axe-core as published on npm, checked against the registry's own integrity hash; fetched
# once into .cache/ rather than committing 540 KB of minified MPL-2.0 code.
AXE_VERSION = "4.10.3"
AXE_INTEGRITY = "sha512-Xm7bpRXnDSX2YE2YFfBk2FnF0ep6tmG7xPh8iHee8MIcrgq762Nkce856dYtJYLkuIoYZvGfTs/PbZhideTcEg=="
AXE_DIR = ROOT / ".cache" / f"axe-core-{AXE_VERSION}"
ARTIFACTS = ROOT / "test-artifacts" / "web"
TRACEBACK = 'Traceback (most recent call last):\n  File "pay.py", line 9, in charge\nZeroDivisionError: division by zero'


def chromium_path() -> str:
    """The system's chromium; a missing one fails the run (make test installs it), never skips."""
    path = os.environ.get("ARCHIVER_CHROMIUM") or shutil.which("chromium") or ""
    if not Path(path).is_file():
        pytest.fail(f"the browser tests need Debian's chromium (system-packages.txt; `make test` installs it), not {path!r}")
    return path


@pytest.fixture(scope="module")
def axe_script() -> Path:
    script = AXE_DIR / "axe.min.js"
    if not script.exists():
        url = f"https://registry.npmjs.org/axe-core/-/axe-core-{AXE_VERSION}.tgz"
        # urllib verifies against the system's CA store, as pip and curl do; requests' own
        # bundle lacks the local CAs a machine behind a TLS-inspecting proxy adds there.
        with urllib.request.urlopen(url, timeout=60) as response:
            tarball = response.read()
        digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
        assert digest == AXE_INTEGRITY, f"{url} does not match its pinned integrity hash"
        AXE_DIR.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
            for name in ("LICENSE", "axe.min.js"):  # the licence travels with the script
                (AXE_DIR / name).write_bytes(archive.extractfile(f"package/{name}").read())  # type: ignore[union-attr]
    return script


@pytest.fixture(scope="module")
def browser() -> Iterator["Browser"]:
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-background-networking"])
        yield launched
        launched.close()


def send(sink: Sink, *records: dict) -> None:
    assert sink.post("/app", orjson.dumps(list(records))).status_code == 200


@pytest.fixture
def web_over_read_cap(start_sink, grid1: "LocalGrid", tmp_path: Path) -> Iterator[tuple[Sink, str]]:  # type: ignore[no-untyped-def]
    """A sink on the grid with records sealed, uploaded and published, and `archiver web` over
    the root's read cap alone: (the sink, the site's URL)."""
    gateway = grid1.gateway_url.split("://", 1)[1].rstrip("/")
    sink: Sink = start_sink(None, "--store", f"tahoe://{gateway}")
    now = time.time()
    send(sink, *({"created": now - 60 + n, "level": "INFO", "logger": "app.web", "message": f"request {n} served"}
                 for n in range(20)),
         {"created": now - 30, "level": "ERROR", "logger": "app.pay", "message": "payment failed", "exc_text": TRACEBACK},
         {"created": now - 20, "level": "INFO", "logger": "app.pay", "message": "payment ok"})
    assert requests.post(sink.url + "/_admin/flush", timeout=120).json()["unpublished"] == 0
    manifest = open_for_reading(sink.data_dir)
    try:
        read_cap = manifest.get_meta("root_read_cap")
    finally:
        manifest.close()
    assert read_cap and read_cap.startswith("URI:DIR2-RO:")
    port = low_port()
    log = tmp_path / "web.log"
    env = {**os.environ, "ARCHIVER_ARCHIVE": f"tahoe://{gateway}/{read_cap}"}  # out of sight of ps
    with open(log, "wb") as out:
        web = subprocess.Popen([sys.executable, "-m", "archiver", "web", "--port", str(port)], stdout=out,
                               stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: b"archive browser on" in log.read_bytes() or web.poll() is not None, "archiver web", 60)
        assert web.poll() is None, log.read_text()
        yield sink, f"http://127.0.0.1:{port}/_web/"
    finally:
        web.send_signal(signal.SIGTERM)
        assert web.wait(30) == 0
        assert read_cap not in log.read_text()


def check_accessibility(page: "Page", axe: Path, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    page.add_script_tag(path=str(axe))
    violations = page.evaluate(
        "async () => (await axe.run(document)).violations.map(v => [v.id, v.impact, v.nodes.map(n => n.target)])")
    assert violations == [], f"{name}: {violations}"


def test_browsing_an_archive_from_its_read_cap(browser: "Browser", axe_script: Path, web_over_read_cap) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    sink, site = web_over_read_cap
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(accept_downloads=True, bypass_csp=True)  # bypass: only to inject axe
    page = context.new_page()
    page.goto(site)
    expect(page.get_by_role("link", name="app")).to_be_visible()
    assert "URI:" not in page.content()  # no capability is ever rendered
    check_accessibility(page, axe_script, "home")

    page.get_by_role("link", name="Search").click()
    page.get_by_label("Message contains").fill("payment")
    page.get_by_label("Minimum level").select_option("ERROR")
    page.get_by_role("button", name="Search").click()
    assert "text=payment" in page.url and "level=ERROR" in page.url  # a shareable search
    results = page.locator("ol.records > li")
    expect(results).to_have_count(1)
    results.first.locator("summary").click()
    expect(page.locator("pre.exc")).to_contain_text("ZeroDivisionError: division by zero")
    check_accessibility(page, axe_script, "search")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download all matches as NDJSON").click()
    lines = [orjson.loads(line) for line in Path(download.value.path()).read_bytes().splitlines()]
    assert [(r["level"], r["message"]) for r in lines] == [("ERROR", "payment failed")]

    page.goto(site)
    page.get_by_role("link", name="app").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Stream app")
    assert "URI:" not in page.content()
    check_accessibility(page, axe_script, "stream")

    page.goto(sink.url + "/_web/tail?stream=app")  # the running sink's own site: its open segments
    expect(page.locator("#tail-state")).to_contain_text("Following")
    for n in range(2):
        send(sink, {"created": time.time(), "level": "WARNING", "logger": "app.live", "message": f"live record {n}"})
        expect(page.locator("#tail")).to_contain_text(f"live record {n}", timeout=30_000)
    check_accessibility(page, axe_script, "tail")
    context.close()
