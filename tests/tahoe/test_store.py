"""TahoeFS on real grids: streaming, other processes, read-only caps, faults, the Tahoe CLI."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import fs
import pytest
import requests
from fs import errors

from archiver.app.grid import LocalGrid
from archiver.store import (
    GridStatus, HasCaps, HealthCheck, LeaseRenewal, NotFound, Stored, StoreError, StoreUnavailable, open_store,
)
from archiver.store.tahoe import _HAPPY, NotEnoughShares, TahoeFS, UploadUnhappy, _error_text, redact
from conftest import peak_rss_growth

MB = 1024 * 1024


def test_50mb_streams_both_ways_in_bounded_memory(grid1: LocalGrid, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(source, "wb") as handle:
        for n in range(50):
            block = os.urandom(MB)
            digest.update(block)
            handle.write(block)
    tahoe = grid1.create_root()
    tahoe.makedir("big")
    with open(source, "rb") as handle:
        grew_up = peak_rss_growth(lambda: tahoe.upload("big/file.bin", handle))
    target = tmp_path / "back.bin"
    with open(target, "wb") as handle:
        grew_down = peak_rss_growth(lambda: tahoe.download("big/file.bin", handle))
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest.hexdigest()
    assert tahoe.getsize("big/file.bin") == 50 * MB
    read_back = hashlib.sha256()

    def read_stream() -> None:
        with tahoe.openbin("big/file.bin") as handle:
            while chunk := handle.read(MB):
                read_back.update(chunk)

    grew_read = peak_rss_growth(read_stream)
    assert read_back.hexdigest() == digest.hexdigest()
    print(f"RSS growth: upload {grew_up / MB:.1f} MB, download {grew_down / MB:.1f} MB, read {grew_read / MB:.1f} MB")
    assert grew_up < 20 * MB and grew_down < 20 * MB and grew_read < 20 * MB


def test_ranges_are_clamped(grid1: LocalGrid) -> None:
    tahoe = grid1.create_root()
    payload = bytes(range(256)) * 400
    tahoe.writebytes("r.bin", payload)
    with tahoe.openbin("r.bin") as handle:
        handle.seek(len(payload) - 10)
        assert handle.read(100) == payload[-10:]
        handle.seek(len(payload) + 5000)  # past the end: Tahoe would send the whole file
        assert handle.read(100) == b""
        handle.seek(1000)
        assert handle.read(5) == payload[1000:1005]


def test_upload_with_caps_answers_what_getinfo_would(grid1: LocalGrid) -> None:
    tahoe = grid1.create_root()
    tahoe.makedirs("day")
    caps = tahoe.upload_with_caps("day/seg.jsonl.gz", io.BytesIO(b"x" * 5000))
    assert caps == tahoe.getinfo("day/seg.jsonl.gz", namespaces=["tahoe"]).raw["tahoe"]
    assert caps["read_cap"].startswith("URI:CHK:") and caps["verify_cap"].startswith("URI:CHK-Verifier:")
    with pytest.raises(errors.ResourceNotFound):  # no directories made on the way, as upload()
        tahoe.upload_with_caps("gone/seg.jsonl.gz", io.BytesIO(b"y"))
    day_cap = tahoe.getinfo("day", namespaces=["tahoe"]).raw["tahoe"]["write_cap"]
    into = tahoe.upload_with_caps("day/by-cap.jsonl.gz", io.BytesIO(b"z" * 5000), parent_cap=day_cap)
    assert into == tahoe.getinfo("day/by-cap.jsonl.gz", namespaces=["tahoe"]).raw["tahoe"]
    assert tahoe.readbytes("day/by-cap.jsonl.gz") == b"z" * 5000


def test_a_freeze_whose_listing_lacks_a_file_put_there_leaves_the_directory_mutable(grid1: LocalGrid) -> None:
    """A listing read from a degraded grid can be an older version: freezing that copy would
    drop the newest files from the tree, so the freezer names what it put there."""
    tahoe = grid1.create_root()
    tahoe.makedirs("app/2026/01/01/00")
    tahoe.upload("app/2026/01/01/00/a.jsonl.gz", io.BytesIO(b"a" * 100))
    with pytest.raises(errors.OperationFailed, match="not in the listing read"):
        tahoe.freeze_dir("app/2026/01/01/00", ["a.jsonl.gz", "b.jsonl.gz"])
    assert tahoe.getinfo("app/2026/01/01/00", namespaces=["tahoe"]).raw["tahoe"]["mutable"]
    assert not tahoe.freeze_dir("app/2026/01/01/00", ["a.jsonl.gz"])["mutable"]
    assert tahoe.readbytes("app/2026/01/01/00/a.jsonl.gz") == b"a" * 100


def test_a_fresh_interpreter_reads_what_another_process_wrote(grid1: LocalGrid) -> None:
    url = grid1.create_root().geturl("/", purpose="fs")
    write = "import fs, sys; f = fs.open_fs(sys.argv[1]); f.makedirs('x/y'); f.writetext('x/y/note.txt', 'written elsewhere')"
    read = "import fs, sys; print(fs.open_fs(sys.argv[1]).readtext('x/y/note.txt'))"
    subprocess.run([sys.executable, "-c", write, url], check=True, timeout=120)
    out = subprocess.run([sys.executable, "-c", read, url], check=True, timeout=120, capture_output=True, text=True)
    assert out.stdout == "written elsewhere\n"
    sub = subprocess.run([sys.executable, "-c", "import fs, sys; print(fs.open_fs(sys.argv[1]).listdir('/'))",
                          url + "/x/y"], check=True, timeout=120, capture_output=True, text=True)
    assert sub.stdout.strip() == "['note.txt']"


def test_read_only_cap_reads_but_never_writes(grid1: LocalGrid) -> None:
    tahoe = grid1.create_root()
    tahoe.makedirs("logs/2026")
    tahoe.writebytes("logs/2026/a.jsonl", b'{"m": 1}\n' * 100)
    read_cap = tahoe.getinfo("/", namespaces=["tahoe"]).raw["tahoe"]["read_cap"]
    assert read_cap.startswith("URI:DIR2-RO:")
    reader = fs.open_fs(f"tahoe://{tahoe.node_url.split('://')[1]}/{read_cap}")
    assert reader.getmeta()["read_only"] is True
    assert reader.listdir("logs/2026") == ["a.jsonl"]
    assert reader.readbytes("logs/2026/a.jsonl") == b'{"m": 1}\n' * 100
    info = reader.getinfo("logs/2026/a.jsonl", namespaces=["tahoe"]).raw["tahoe"]
    assert info["write_cap"] is None and info["read_cap"].startswith("URI:CHK:")
    for write in (
        lambda: reader.writebytes("logs/new.txt", b"x"),
        lambda: reader.makedir("more"),
        lambda: reader.makedirs("a/b"),
        lambda: reader.remove("logs/2026/a.jsonl"),
        lambda: reader.removetree("logs"),
        lambda: reader.upload("u.bin", io.BytesIO(b"x")),
        lambda: reader.openbin("logs/2026/a.jsonl", "a"),
    ):
        with pytest.raises(errors.ResourceReadOnly):
            write()
    assert tahoe.readbytes("logs/2026/a.jsonl") == b'{"m": 1}\n' * 100


def test_capabilities_never_appear_in_errors_or_reprs(grid1: LocalGrid) -> None:
    tahoe = grid1.create_root()
    cap = tahoe.root_cap
    secret = cap.split(":")[2]
    texts = [repr(tahoe), str(tahoe)]
    for failing in (lambda: tahoe.readbytes("missing"), lambda: tahoe.listdir("nope"),
                    lambda: TahoeFS("http://127.0.0.1:1", cap).listdir("/")):
        with pytest.raises(errors.FSError) as err:
            failing()
        texts += [str(err.value), repr(err.value)]
    with pytest.raises(StoreError) as failed:
        open_store(f"tahoe://127.0.0.1:1/{cap[:-3]}")
    texts.append(str(failed.value))
    assert not any(secret in text for text in texts), texts
    assert secret not in redact(f"see {cap} and {cap}")
    assert redact(redact(cap)) == redact(cap) == cap[: cap.find(":", 4) + 5] + "…"  # cut once, however often redacted


def test_open_store_local_fallback(tmp_path: Path) -> None:
    store = open_store(f"osfs://{tmp_path / 'archive'}")
    store.makedirs("app/2026/11/23")
    store.put("app/2026/11/23/seg.jsonl.gz", io.BytesIO(b"x"))
    assert store.url == f"osfs://{tmp_path / 'archive'}"
    assert (tmp_path / "archive" / "app" / "2026" / "11" / "23" / "seg.jsonl.gz").read_bytes() == b"x"


def test_the_tahoe_cli_sees_what_tahoefs_wrote(grid1: LocalGrid) -> None:
    tahoe = grid1.create_root()
    tahoe.makedirs("app/2026/11")
    tahoe.writebytes("app/2026/11/seg.jsonl", b'{"message": "from TahoeFS"}\n' * 10)
    grid1.add_alias("archive", tahoe.root_cap)
    node = str(grid1.node_dir(grid1.gateway_node))
    listing = subprocess.run([grid1.tahoe, "-d", node, "ls", "archive:app/2026/11"],
                             capture_output=True, text=True, timeout=120, check=True)
    assert listing.stdout.split() == ["seg.jsonl"]
    got = subprocess.run([grid1.tahoe, "-d", node, "get", "archive:app/2026/11/seg.jsonl", "-"],
                         capture_output=True, timeout=120, check=True)
    assert got.stdout == b'{"message": "from TahoeFS"}\n' * 10


def test_an_unhappy_answer_is_read_past_the_failures_it_quotes() -> None:
    """A node refusing connections puts its Failure tracebacks inside the exception's message,
    so the answer's last line is ``])``: the message is read from the exception line on."""
    answer = requests.Response()
    answer.status_code = 500
    answer._content = (Path(__file__).parent / "unhappy_500.txt").read_bytes()  # as a 1.20 node sent it
    text = _error_text(answer)
    assert text.startswith("allmydata.interfaces.UploadUnhappinessError: server selection failed"), text
    assert "\n" not in text and len(text) <= 500
    match = _HAPPY.search(text)
    assert match and match.group(1) == "3"


def test_node_loss_on_a_2_of_3_grid(grid3: LocalGrid) -> None:
    tahoe = grid3.create_root()
    payload = os.urandom(200_000)
    tahoe.writebytes("before.bin", payload)
    grid3.stop_node("storage2")
    try:
        grid3.wait_ready(60, servers=2)
        time.sleep(1)
        assert tahoe.readbytes("before.bin") == payload  # 2 of 3 shares are enough to read
        with pytest.raises(UploadUnhappy) as unhappy:
            tahoe.writebytes("during.bin", os.urandom(200_000))
        message = str(unhappy.value)
        assert "2 storage server(s) connected" in message and "shares.happy is 3" in message, message
        grid3.stop_node("storage1")
        deadline = time.monotonic() + 60
        while (grid3.servers_connected() or 0) > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        with pytest.raises(NotEnoughShares):
            tahoe.readbytes("before.bin")
    finally:
        grid3.start_node("storage1")
        grid3.start_node("storage2")
    grid3.wait_ready(60)
    tahoe.writebytes("after.bin", payload)
    assert tahoe.readbytes("after.bin") == payload and tahoe.readbytes("before.bin") == payload


def test_tahoe_store_speaks_the_protocol_with_every_capability(grid1: LocalGrid) -> None:
    """Caps from a put, a read by cap, one parsed Health for check and lease renewal, servers
    connected, a sub path rooted by its own cap, and errors mapped to StoreErrors."""
    kept: list[Stored] = []
    store = open_store(f"tahoe://{grid1.gateway_url.split('://')[1]}", make_root=True, on_root=kept.append)
    assert isinstance(store, (HasCaps, HealthCheck, LeaseRenewal, GridStatus))
    assert kept[0].write_cap and kept[-1].read_cap and store.url.startswith("tahoe://127.0.0.1:")
    store.makedirs("/app/day")
    stored = store.put("/app/day/seg.jsonl.gz", io.BytesIO(b"s" * 5000), parent=store.caps("/app/day").write_cap)
    assert stored.read_cap and stored.read_cap.startswith("URI:CHK:") and stored == store.caps("/app/day/seg.jsonl.gz")
    with store.open_cap(stored.read_cap, 5000, "/app/day/seg.jsonl.gz") as by_cap:
        assert by_cap.read() == b"s" * 5000
    health = store.check("/app/day/seg.jsonl.gz")
    assert health.healthy and health.enough(1) and not health.enough(2) and health.shares_good == 1
    assert store.renew_lease("/app/day/seg.jsonl.gz").healthy and store.servers_connected() == 1
    with pytest.raises(NotFound):
        store.open("/app/day/missing")
    assert open_store(f"tahoe://{grid1.gateway_url.split('://')[1]}/{kept[-1].write_cap}/app").listdir("/") == ["day"]
    with pytest.raises(StoreUnavailable):
        open_store(f"tahoe://127.0.0.1:1/{kept[-1].write_cap}")
