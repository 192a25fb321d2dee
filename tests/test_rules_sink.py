"""Rules at ingest in a real sink: HTTP (inline and in a decode worker) and TCP records are
dropped, routed, tagged and redacted as configured, drops are counted in /_status, /_metrics
and `archiver status`, and no redacted secret is in any file the sink wrote."""

from __future__ import annotations

import gzip
import urllib.parse
from pathlib import Path

import orjson
import requests

from conftest import Sink, archiver_cli, cat_json, low_port, send_tcp

CARD = "4111 1111 1111 1111"
TOKEN = "tok_Zx81Qa72Wc63Ed54"
SECRETS = [CARD.encode(), CARD.replace(" ", "").encode(), TOKEN.encode()]
RULES = r"""
[[rules]]
name = "health"
logger = ["healthcheck", "kube-probe*"]
drop = true

[[rules]]
name = "secrets"
redact = ['\b(?:\d[ -]?){13,16}\b', 'tok_[A-Za-z0-9]{16}']

[[rules]]
name = "nginx"
source = "tcp"
fields = { PROGRAM = "^nginx$" }
route = "web"
stop = true

[[rules]]
name = "tag"
set = { "env" = "prod" }
"""


def test_rules_drop_route_redact_in_a_real_sink(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "archiver.toml"
    config.write_text(f"[tcp]\nenabled = true\nport = {low_port()}\n{RULES}")
    sink: Sink = start_sink(tmp_path / "data", "-c", str(config))
    url = sink.url

    small = [{"logger": "healthcheck", "message": "ok"}, {"message": f"paid with {CARD}"},
             {"message": "login", "auth": {"token": TOKEN}}, 1, f"bare {TOKEN}"]
    assert requests.post(f"{url}/app", json=small, timeout=30).json() == {"accepted": 2, "rejected": 2, "dropped": 1}
    # Large enough for a decode worker: the rules run there.
    bulk = [{"logger": "kube-probe-1", "message": "ok"}] + [{"message": f"card {CARD} #{n}", "pad": "x" * 200}
                                                          for n in range(400)]
    body = b"\n".join(orjson.dumps(record) for record in bulk)
    assert len(body) > 64 * 1024
    assert requests.post(f"{url}/bulk", data=body, timeout=30).json()["accepted"] == 400
    form = urllib.parse.urlencode({"name": "shop", "msg": "paid with %s", "args": f"('{CARD}',)",
                                   "levelname": "INFO", "created": "1795467684.25"})
    assert requests.post(f"{url}/shop", data=form, timeout=30,
                         headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 200
    refused = requests.post(f"{url}/app", data=f"not gzip {TOKEN}", headers={"Content-Encoding": "gzip"}, timeout=30)
    assert refused.status_code == 400

    tcp_port = orjson.loads((sink.data_dir / "sink.json").read_bytes())["tcp"].rsplit(":", 1)[1]
    lines = [{"PROGRAM": "nginx", "MESSAGE": f"GET /pay?card={CARD}"}, {"logger": "healthcheck", "message": "ok"},
             {"PROGRAM": "cron", "MESSAGE": "ran"}]
    payload = b"".join(orjson.dumps(line) + b"\n" for line in lines) + f"not json {TOKEN}\n".encode()
    send_tcp("127.0.0.1", int(tcp_port), payload)

    status = requests.get(f"{url}/_status", timeout=30).json()
    assert status["dropped_by_rule"] == {"health": 3}
    metrics = requests.get(f"{url}/_metrics", timeout=30).text
    assert 'archiver_rule_dropped_total{rule="health",source="http"} 2.0' in metrics
    assert 'archiver_rule_dropped_total{rule="health",source="tcp"} 1.0' in metrics
    assert "dropped by rules: health 3" in archiver_cli("status", "--data-dir", str(sink.data_dir)).stdout.decode()
    assert sink.stop() == 0

    records = cat_json(sink.data_dir)
    by_stream: dict[str, list[dict]] = {}
    for record in records:
        by_stream.setdefault(record["stream"], []).append(record)
    assert sorted(by_stream) == ["_rejected", "app", "bulk", "shop", "tcp", "web"]
    assert [r["message"] for r in by_stream["web"]] == ["GET /pay?card=[REDACTED]"]
    assert "env" not in by_stream["web"][0]["fields"]  # stop: the tag rule did not run
    assert [r["message"] for r in by_stream["tcp"]] == ["ran"] and by_stream["tcp"][0]["fields"]["env"] == "prod"
    assert [r["message"] for r in by_stream["app"]] == ["paid with [REDACTED]", "login"]
    assert by_stream["app"][1]["fields"]["auth"] == {"token": "[REDACTED]"}
    assert len(by_stream["bulk"]) == 400 and by_stream["bulk"][0]["message"] == "card [REDACTED] #0"
    assert by_stream["shop"][0]["message"] == "paid with [REDACTED]"
    assert by_stream["shop"][0]["fields"]["args"] == "('[REDACTED]',)"
    rejected = sorted(r["fields"]["raw"] for r in by_stream["_rejected"])
    assert rejected == sorted(["1", '"bare [REDACTED]"', "not gzip [REDACTED]", "not json [REDACTED]"])

    written = [path for path in tmp_path.rglob("*") if path.is_file() and path != config]
    assert any(path.name.endswith(".log") for path in written)
    for path in written:
        content = path.read_bytes()
        if content[:2] == b"\x1f\x8b":
            content = gzip.decompress(content)
        for secret in SECRETS:
            assert secret not in content, (path, secret)
