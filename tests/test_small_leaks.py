"""Small leaks: store credentials in status and logs, /_admin behind a local proxy, bare
years in --since, and root caps on the command line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp.test_utils import TestClient, TestServer

from archiver.ingest.http import create_app
from archiver.layout import DataDir
from archiver.rotation import RotationPolicy
from archiver.segments import SegmentWriter
from conftest import archiver_cli

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
