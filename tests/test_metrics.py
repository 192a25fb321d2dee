"""/_metrics as Prometheus reads it: parsed with prometheus_client's own parser, the figures
move as records flow; the alert rules pass promtool; every metric the dashboard and the rules
use is in a real scrape and in docs/operations.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import orjson
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, LocalSink, Sink, archiver_cli, send_tcp, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
ALERTS = ROOT / "config" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "config" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "config" / "grafana" / "archiver.json"


def scrape(url: str) -> Samples:
    response = requests.get(url + "/_metrics", timeout=30)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def status(url: str) -> dict:
    return requests.get(url + "/_status", timeout=30).json()


def test_http_records_rejects_and_latency(local_sink) -> None:  # type: ignore[no-untyped-def]
    sink: LocalSink = local_sink()
    for n in range(3):
        assert sink.post("/app", f"msg=m{n}").status_code == 200
    assert sink.post("/app", b'[{"message": "good"}, 17, {"message": "good2"}]').json() == {"accepted": 2, "rejected": 1}
    assert sink.post("/" + "a" * 65, "msg=x").status_code == 400
    samples = scrape(sink.url)
    assert value(samples, "archiver_records_received_total", source="http", stream="app") == 5
    assert value(samples, "archiver_received_bytes_total", source="http", stream="app") > 0
    assert value(samples, "archiver_rejected_total", source="http", reason="record") == 1
    assert value(samples, "archiver_rejected_total", source="http", reason="bad_stream") == 1
    assert value(samples, "archiver_http_responses_total", code="200") == 4
    assert value(samples, "archiver_http_responses_total", code="400") == 1
    assert value(samples, "archiver_ack_latency_seconds_count") == 5  # every answer after a durable append
    assert value(samples, "archiver_fsync_duration_seconds_count") > 0
    assert value(samples, "archiver_fsync_rounds_total") == value(samples, "archiver_fsync_duration_seconds_count")
    assert value(samples, "archiver_segments", state="open") == 2  # app and _rejected
    assert value(samples, "archiver_build_info", version=status(sink.url)["version"]) == 1
    document = status(sink.url)
    assert document["records"] == {"app": 5} and document["records_by_source"]["http"] == {"app": 5}
    assert document["rejected"] == 2 and document["rejected_by_reason"] == {"bad_stream": 1, "record": 1}


def test_a_full_spool_answers_503_and_is_counted(local_sink) -> None:  # type: ignore[no-untyped-def]
    sink: LocalSink = local_sink(env={"ARCHIVER_SPOOL_MAX_BYTES": "1"})
    assert sink.post("/app", "msg=fits").status_code == 200  # the spool was empty
    assert sink.post("/app", "msg=over").status_code == 503
    samples = scrape(sink.url)
    assert value(samples, "archiver_http_responses_total", code="503") == 1
    assert value(samples, "archiver_rejected_total", source="http", reason="spool_full") == 1
    assert value(samples, "archiver_ack_latency_seconds_count") == 1  # a 503 appended nothing
    assert value(samples, "archiver_spool_limit_bytes") == 1
    assert value(samples, "archiver_spool_bytes") > 1
    assert status(sink.url)["rejected"] == 0  # nothing went to _rejected


def test_each_sink_has_its_own_registry(local_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    busy: LocalSink = local_sink(data_dir=tmp_path / "busy")
    idle: LocalSink = local_sink(data_dir=tmp_path / "idle")
    assert busy.post("/app", "msg=x").status_code == 200
    assert value(scrape(busy.url), "archiver_records_received_total", source="http", stream="app") == 1
    samples = scrape(idle.url)
    assert value(samples, "archiver_records_received_total", source="http", stream="app") == 0
    assert value(samples, "archiver_ack_latency_seconds_count") == 0


def _send_tcp(sink: Sink, lines: list[bytes]) -> None:
    """Send ``lines`` and wait until the sink has made them durable and ended the connection."""
    host, port = orjson.loads((sink.data_dir / "sink.json").read_bytes())["tcp"][len("tcp://"):].rsplit(":", 1)
    send_tcp(host, int(port), b"\n".join(lines) + b"\n")


def test_tcp_uploads_and_the_local_only_window(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sink: Sink = start_sink(None, "--tcp-port", "0", "--store", f"osfs://{tmp_path / 'store'}")
    _send_tcp(sink, [b'{"message": "one"}', b'{"message": "two"}', b"not json", b'{"message": "three"}'])
    assert sink.post("/app", "msg=http").status_code == 200
    samples = scrape(sink.url)
    assert value(samples, "archiver_records_received_total", source="tcp", stream="tcp") == 3
    assert value(samples, "archiver_received_bytes_total", source="tcp", stream="tcp") > 0
    assert value(samples, "archiver_rejected_total", source="tcp", reason="record") == 1
    assert value(samples, "archiver_records_received_total", source="http", stream="app") == 1
    assert value(samples, "archiver_store_shares_happy") == 1
    document = status(sink.url)
    assert document["records"] == {"app": 1, "tcp": 3} and document["records_by_source"]["tcp"] == {"tcp": 3}
    assert document["rejected"] == 1

    # Acknowledged and not uploaded: the window is open, in every view of it.
    wait_until(lambda: value(scrape(sink.url), "archiver_local_only_oldest_seconds") > 0, "a local-only age")
    assert status(sink.url)["local_only_oldest_seconds"] > 0
    cli = ["--data-dir", str(sink.data_dir)]
    assert orjson.loads(archiver_cli("status", "--json", *cli).stdout)["local_only_oldest_seconds"] > 0
    assert "on this host only: records acknowledged up to" in archiver_cli("status", *cli).stdout.decode()

    archiver_cli("flush", *cli)
    samples = scrape(sink.url)
    assert value(samples, "archiver_local_only_oldest_seconds") == 0
    assert value(samples, "archiver_backlog_bytes") == 0 and value(samples, "archiver_backlog_oldest_seconds") == 0
    shipped = sum(value(samples, "archiver_segments", state=state) for state in ("uploaded", "verified", "pruned"))
    assert shipped == 3  # app, tcp and _rejected
    assert value(samples, "archiver_segments", state="open") == value(samples, "archiver_segments", state="sealed") == 0
    assert value(samples, "archiver_job_runs_total", job="seal") == 3
    assert value(samples, "archiver_last_upload_timestamp_seconds") > 0
    assert value(samples, "archiver_job_runs_total", job="lease_renewal") == 0
    assert status(sink.url)["local_only_oldest_seconds"] == 0
    assert "on this host only: nothing" in archiver_cli("status", *cli).stdout.decode()
    # The sealing woke the upload job, which counts its runs (flush uploads outside the jobs).
    wait_until(lambda: value(scrape(sink.url), "archiver_job_runs_total", job="upload") > 0, "an upload job run")
    assert value(scrape(sink.url), "archiver_job_errors_total", job="upload") == 0


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian package prometheus, system-packages.txt target test)"
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, cwd=ALERTS.parent)


def test_alert_rules_pass_promtool() -> None:
    checked = _promtool("check", "rules", ALERTS.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", ALERTS_TEST.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def _used_metrics() -> set[str]:
    """Every archiver_* name in the dashboard's expressions and the alert rules' expressions."""
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    expressions += [variable["query"] for variable in dashboard["templating"]["list"] if variable["type"] == "query"]
    expressions += re.findall(r"expr: (.+(?:\n {10}.+)*)", ALERTS.read_text())
    return set(re.findall(r"\barchiver_[a-z_]+", "\n".join(expressions)))


def test_dashboard_and_alerts_use_real_metrics_documented(start_sink, grid1, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sink: Sink = start_sink(None, "--store", "tahoe://" + grid1.gateway_url.split("://", 1)[1])
    assert sink.post("/app", "msg=x").status_code == 200
    archiver_cli("flush", "--data-dir", str(sink.data_dir))  # opens the store: its servers are known
    samples = scrape(sink.url)
    scraped = {name for name, _ in samples}
    used = _used_metrics()
    assert len(used) >= 15 and not used - scraped, f"not in a scrape: {sorted(used - scraped)}"
    assert value(samples, "archiver_store_servers_connected") >= 1
    families = {re.sub(r"_(total|bucket|count|sum|created|info)$", "", name) for name in scraped}
    operations = (ROOT / "docs" / "operations.md").read_text()
    undocumented = {name for name in families if f"`{name}" not in operations}
    assert not undocumented, f"metrics missing from docs/operations.md: {sorted(undocumented)}"
