"""Small leaks: store credentials in status and logs, /_admin behind a local proxy, bare
years in --since, and root caps on the command line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from aiohttp.test_utils import TestClient, TestServer
from fs.osfs import OSFS

from archiver.common.units import parse_time
from archiver.format.layout import DataDir
from archiver.format.record import Context, encode_record
from archiver.ingest.decode.jsonbody import json_record
from archiver.ingest.http import create_app
from archiver.spool.rotation import RotationPolicy
from archiver.spool.writer import SegmentWriter
from archiver.store import FsStore
from conftest import archiver_cli, cat_json, make_uploader, seal

SECRET = "s3cretpw"
FTP_STORE = f"ftp://archiver:{SECRET}@127.0.0.1:1/archive?token=t0kensecret"


def test_store_credentials_are_in_no_status_or_log(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A store URL with a password and a secret query parameter, that cannot be opened: the
    failures it causes are reported everywhere with the secrets cut."""
    sink = start_sink(None, "--store", FTP_STORE)
    assert sink.post("/app", "msg=hello").status_code == 200
    flushed = archiver_cli("flush", "--data-dir", str(sink.data_dir), check=False)  # the upload fails
    assert flushed.returncode == 1
    status = requests.get(f"{sink.url}/_status", timeout=10).text
    cli_json = archiver_cli("status", "--json", "--data-dir", str(sink.data_dir)).stdout.decode()
    cli_text = archiver_cli("status", "--data-dir", str(sink.data_dir)).stdout.decode()
    assert sink.stop() == 0
    outputs = {"/_status": status, "status --json": cli_json, "status": cli_text,
               "flush": (flushed.stdout + flushed.stderr).decode(), "log": sink.log_text()}
    assert "ftp://archiver:***@127.0.0.1:1/archive?token=***" in cli_json
    assert "last_error" in status and "null" not in status.split('"last_error"', 1)[1][:8]  # a failure was shown
    for name, text in outputs.items():
        assert SECRET not in text and "t0kensecret" not in text, f"{name} shows a store secret:\n{text}"


async def _admin_answers(data_dir: Path, **admin: Any) -> list[int]:
    """Status codes of POST /_admin/flush from 127.0.0.1: no token, the token, a wrong one."""
    writer = SegmentWriter(DataDir(data_dir), "sinkA", RotationPolicy(10**9, 10**9, 3600))
    await writer.start()

    async def flush() -> dict[str, Any]:
        return {"uploaded": 0, "failed": 0, "backlog": 0}

    client = TestClient(TestServer(create_app(writer, flush=flush, admin_token="adm1n", **admin), host="127.0.0.1"))
    await client.start_server()
    try:
        answers = []
        for headers in ({}, {"Authorization": "Bearer adm1n"}, {"Authorization": "Bearer guess"}):
            response = await client.post("/_admin/flush", headers=headers)
            answers.append(response.status)
    finally:
        await client.close()
        await writer.close()
    return answers


@pytest.mark.parametrize(("trust", "answers"), [(True, [200, 200, 200]), (False, [403, 200, 403])])
def test_admin_trusts_loopback_only_when_told(tmp_path: Path, trust: bool, answers: list[int]) -> None:
    """Behind a local reverse proxy every client is loopback: admin.trust_loopback = false
    leaves the token as the only key."""
    (tmp_path / "data").mkdir()
    assert asyncio.run(_admin_answers(tmp_path / "data", admin_trust_loopback=trust)) == answers


NOW = 1_795_467_684.0  # 2026-11-23T20:01:24Z


@pytest.mark.parametrize(
    ("value", "moment"),
    [
        ("2024", "2024-01-01T00:00:00.000000Z"),
        ("2024-05", "2024-05-01T00:00:00.000000Z"),
        (" 2024-12 ", "2024-12-01T00:00:00.000000Z"),
        ("2024-05-10", "2024-05-10T00:00:00.000000Z"),
        ("2024-05-10T12:30+02:00", "2024-05-10T10:30:00.000000Z"),
        ("90s", "2026-11-23T20:59:54.000000Z"),
        ("2h", "2026-11-23T19:01:24.000000Z"),
        ("7d", "2026-11-16T21:01:24.000000Z"),
    ],
)
def test_years_and_months_are_dates_and_ages_carry_their_unit(value: str, moment: str) -> None:
    assert parse_time(value, NOW) == moment


@pytest.mark.parametrize("value", ["90", "86400", "2024-13", "0000", "2024-5", "yesterday"])
def test_what_is_neither_a_date_nor_an_age_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="is n"):
        parse_time(value, NOW)


def test_since_a_year_reads_that_year(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    moments = {"end of 2023": 1_704_067_199, "may 2024": 1_715_299_200, "new year 2025": 1_735_689_600}

    async def write() -> None:
        writer = SegmentWriter(DataDir(data_dir), "sinkA", RotationPolicy(10**9, 10**9, 3600))
        await writer.start()
        for message, created in moments.items():
            writer.write("app", encode_record(json_record({"message": message, "created": created}, Context("app", None, 0))), 1)
        await writer.commit()
        await writer.close()

    asyncio.run(write())

    def cat(*args: str) -> list[str]:
        return [record["message"] for record in cat_json(data_dir, *args)]

    assert cat("--since", "2024", "--until", "2025") == ["may 2024"]
    assert cat("--since", "2024-05") == ["may 2024", "new year 2025"]
    assert cat("--until", "2024-05-10T00:00:01") == ["end of 2023", "may 2024"]


def _archiver(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("ARCHIVER_")}
    return subprocess.run([sys.executable, "-m", "archiver", *args], capture_output=True, text=True, timeout=120,
                          env={**environment, **(env or {})})


def test_the_archive_url_can_come_from_a_file_or_the_environment(tmp_path: Path) -> None:
    """A root cap on the command line lands in ps and shell history: --archive @FILE and
    ARCHIVER_ARCHIVE keep it off. Flags on the command line still beat the environment."""
    seal(tmp_path / "data", {"app": 3})
    uploader = make_uploader(tmp_path, FsStore(OSFS(str(tmp_path / "store"), create=True)))
    assert uploader.upload_due()["uploaded"] == 1
    uploader.publish()
    url = f"osfs://{tmp_path / 'store'}"
    cap_file = tmp_path / "root.cap"
    cap_file.write_text(url + "\n")
    expected = [f"app-{n}" for n in range(3)]

    def messages(result: subprocess.CompletedProcess[str]) -> list[str]:
        assert result.returncode == 0, result.stderr
        return [orjson.loads(line)["message"] for line in result.stdout.splitlines()]

    assert messages(_archiver("cat", "--json", "--archive", f"@{cap_file}")) == expected
    assert messages(_archiver("cat", "--json", env={"ARCHIVER_ARCHIVE": url})) == expected
    assert messages(_archiver("cat", "--json", env={"ARCHIVER_ARCHIVE": f"@{cap_file}"})) == expected
    assert "1 segment(s) checked, 0 problem(s)" in _archiver("verify", env={"ARCHIVER_ARCHIVE": url}).stdout
    empty = tmp_path / "empty"
    empty.mkdir()  # not a data dir: --data-dir on the command line is what is read, not the environment
    refused = _archiver("cat", "--json", "--data-dir", str(empty), env={"ARCHIVER_ARCHIVE": url})
    assert refused.returncode == 1 and "empty" in refused.stderr
    rebuilt = _archiver("manifest", "rebuild", "--data-dir", str(tmp_path / "rebuilt"), env={"ARCHIVER_ARCHIVE": url})
    assert rebuilt.returncode == 0 and "rebuilt 1 segment(s)" in rebuilt.stdout, rebuilt.stderr
    missing = _archiver("ls", "--archive", f"@{tmp_path / 'nowhere.cap'}")
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_admin_behind_a_local_proxy_needs_the_token(start_sink) -> None:  # type: ignore[no-untyped-def]
    """A running sink with admin.trust_loopback off: loopback alone no longer opens /_admin."""
    sink = start_sink(None, env={"ARCHIVER_ADMIN_TRUST_LOOPBACK": "false", "ARCHIVER_ADMIN_TOKEN": "adm1n"})
    assert requests.post(f"{sink.url}/_admin/flush", timeout=30).status_code == 403
    allowed = requests.post(f"{sink.url}/_admin/flush", headers={"Authorization": "Bearer adm1n"}, timeout=30)
    assert allowed.status_code == 200
