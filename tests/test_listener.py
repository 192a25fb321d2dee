"""The HTTP listener holds at most server.max_connections: the rest wait in the kernel's queue."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

import requests

from conftest import cat_json, peers_of, wait_until


def test_clients_beyond_the_limit_wait_and_are_served_when_a_slot_frees(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink(tmp_path / "data", env={"ARCHIVER_SERVER_MAX_CONNECTIONS": "3"})
    address = urlsplit(sink.url)
    idle = [socket.create_connection((address.hostname, address.port)) for _ in range(3)]
    wait_until(lambda: len(peers_of(sink.proc.pid, address.port)) == 3, "all three accepted: the sink is full")
    answers: list[int] = []
    client = threading.Thread(
        target=lambda: answers.append(requests.post(sink.url + "/app", data="msg=waited", timeout=60).status_code))
    client.start()
    client.join(1.5)
    assert client.is_alive() and not answers  # connected in the kernel's queue, not yet accepted
    idle[0].close()
    client.join(30)
    assert answers == [200]
    for sock in idle[1:]:
        sock.close()
    assert sink.stop() == 0
    assert [r["message"] for r in cat_json(sink.data_dir)] == ["waited"]
