"""Every body shape the HTTP contract accepts, against one real HTTP app served in-process."""

from __future__ import annotations

import gzip
import json
import subprocess
import zlib
from typing import Iterator

import pytest
import requests

from archiver.app.config import load_config
from conftest import LocalSink, read_json


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSink]:
    started = LocalSink(tmp_path_factory.mktemp("bodies") / "data", load_config()).start()
    yield started
    started.stop()


def test_curl_example(sink: LocalSink) -> None:
    out = subprocess.run(["curl", "-sS", "-X", "POST", "-d", "abc=def", sink.url], capture_output=True, check=True)
    assert out.stdout == b"ok\n"


@pytest.mark.parametrize(
    ("name", "body", "headers", "accepted"),
    [
        ("object", json.dumps({"message": "obj", "level": "info"}).encode(), {"Content-Type": "application/json"}, 1),
        ("array", json.dumps([{"message": "arr1"}, {"message": "arr2"}]).encode(), {}, 2),
        ("ndjson", b'{"message": "nd1"}\n{"message": "nd2"}\n{"message": "nd3"}', {}, 3),
        ("gzip", gzip.compress(b'[{"message": "gz1"}, {"message": "gz2"}]', mtime=0), {"Content-Encoding": "gzip"}, 2),
        ("gzip-unlabelled", gzip.compress(b'{"message": "gz3"}', mtime=0), {}, 1),
        ("zlib-gelf", zlib.compress(b'{"version": "1.1", "short_message": "gelf1", "level": 3}'),
         {"Content-Encoding": "gzip,deflate"}, 1),
        ("concatenated", b'{"message": "cc1"}{"message": "cc2"}', {}, 2),
    ],
)
def test_json_bodies(sink: LocalSink, name: str, body: bytes, headers: dict, accepted: int) -> None:
    response = sink.post(f"/{name}", body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": accepted, "rejected": 0}


def test_form_bodies(sink: LocalSink) -> None:
    assert sink.post("/form", "name=app&msg=hello+%25s&args=%28%27w%27%2C%29").text == "ok\n"
    assert sink.post("/form", gzip.compress(b"name=app&msg=zipped"), headers={"Content-Encoding": "gzip"}).text == "ok\n"
    assert requests.get(sink.url + "/form?name=app&msg=via+get", timeout=10).text == "ok\n"


def test_partial_batch_archives_good_elements(sink: LocalSink) -> None:
    response = sink.post("/partial", b'[{"message": "good"}, 17, {"message": "good2"}]')
    assert response.status_code == 200 and response.json() == {"accepted": 2, "rejected": 1}


def test_reserved_and_status_paths(sink: LocalSink) -> None:
    assert requests.get(sink.url + "/_health", timeout=10).json() == {"status": "ok"}
    status = requests.get(sink.url + "/_status", timeout=10).json()
    assert status["fsync"] == "always" and status["sink_id"] == LocalSink.SINK_ID
    assert status["decode_workers"] == {"configured": 2, "restarts": 0}
    assert "archiver_fsync_rounds_total" in requests.get(sink.url + "/_metrics", timeout=10).text
    assert requests.get(sink.url + "/_nothing", timeout=10).status_code == 404
    assert "archiver" in requests.get(sink.url + "/", timeout=10).text
    assert requests.put(sink.url + "/app", data=b"x=1", timeout=10).status_code == 405


def test_everything_comes_back(sink: LocalSink) -> None:
    """Runs last in this module: stop the sink (sealing every segment) and read the whole archive."""
    sink.stop()
    records = read_json(sink.data_dir)
    messages = {(r["stream"], r["message"]) for r in records}
    for stream, message in [
        ("object", "obj"), ("array", "arr2"), ("ndjson", "nd3"), ("gzip", "gz2"), ("gzip-unlabelled", "gz3"),
        ("zlib-gelf", "gelf1"), ("concatenated", "cc2"), ("form", "hello w"), ("form", "zipped"),
        ("form", "via get"), ("partial", "good"), ("partial", "good2"),
    ]:
        assert (stream, message) in messages
    [curl] = [r for r in records if r["stream"] == "default"]
    assert curl["fields"] == {"abc": "def"} and curl["peer"] == "127.0.0.1"
    gelf = next(r for r in records if r["message"] == "gelf1")
    assert gelf["level"] == "ERROR"
    [bad] = [r for r in records if r["stream"] == "_rejected"]
    assert bad["fields"]["raw"] == "17" and bad["fields"]["target_stream"] == "partial"
