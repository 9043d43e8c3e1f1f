"""The daemon as a real process: polls lab endpoints, serves /metrics and the API, stops cleanly."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from expressway_certd_lab.tls import closed_port

from expressway_certd.monitor import migrations
from tests.helpers import DaemonProcess, free_port

SECRET = "Adm1n-Secret-Value-42"


def write_config(tmp_path: Path, ports: list[int], bundle: Path, listen: int, name: str) -> Path:
    endpoints = ", ".join(
        f'{{ host = "127.0.0.1", port = {p}, service = "svc{p}", sni = "expe.example.com" }}'
        for p in ports
    )
    path = tmp_path / name
    path.write_text(
        f"""
[daemon]
listen = "127.0.0.1:{listen}"
state = "{tmp_path / "state.db"}"
poll_interval = "2s"
probe_timeout = "1s"
trust_bundle = "{bundle}"

[[expressway]]
name = "expe"
role = "e"
version = "X15.4"
address = "expe.example.com"
cluster = "expe-cluster.example.com"
username = "admin"
password = "env:CERTD_TEST_SECRET"
endpoints = [{endpoints}]
"""
    )
    return path


async def test_daemon_end_to_end(tmp_path, served, trust_bundle):
    good = await served(
        cn="expe.example.com", sans=["expe.example.com", "expe-cluster.example.com"]
    )
    other = await served(cn="expe.example.com", sans=["expe.example.com"], days=5)
    refused = await closed_port()
    port = free_port()
    cfg = write_config(tmp_path, [good.port, other.port, refused], trust_bundle, port, "a.toml")
    daemon = await DaemonProcess(cfg, port, env={"CERTD_TEST_SECRET": SECRET}).start()
    try:
        await daemon.wait_for("/healthz", lambda s, b: s == 200)
        endpoints = await daemon.wait_for(
            "/api/v1/endpoints", lambda s, b: s == 200 and len(b) == 3
        )
        by_port = {e["port"]: e for e in endpoints}
        assert by_port[good.port]["ok"] and by_port[good.port]["chain_verified"]
        assert by_port[good.port]["cert"]["sans"] == [
            "DNS:expe.example.com",
            "DNS:expe-cluster.example.com",
        ]
        assert by_port[other.port]["san_problem"] == "SAN list lacks expe-cluster.example.com"
        assert by_port[refused]["ok"] is False and by_port[refused]["error_class"] == "refused"

        status, ready = await daemon.get("/readyz")
        assert status == 200 and ready["ready"] and ready["store"]

        _, metrics = await daemon.get("/metrics")
        labels = f'host="127.0.0.1",port="{good.port}",service="svc{good.port}",target="expe"'
        assert (
            f'expressway_cert_not_after_timestamp_seconds{{cert_kind="server",{labels}}}' in metrics
        )
        assert f"expressway_probe_success{{{labels}}} 1.0" in metrics
        assert f"expressway_cert_chain_ok{{{labels}}} 1.0" in metrics
        bad = f'host="127.0.0.1",port="{refused}",service="svc{refused}",target="expe"'
        assert f"expressway_probe_success{{{bad}}} 0.0" in metrics
        assert (
            f'expressway_cert_not_after_timestamp_seconds{{cert_kind="server",{bad}}}'
            not in metrics
        )
        other_labels = f'host="127.0.0.1",port="{other.port}",service="svc{other.port}"'
        assert f'expressway_cert_san_ok{{{other_labels},target="expe"}} 0.0' in metrics
        assert 'cluster="expe-cluster.example.com"' in metrics
        assert "expressway_certd_build_info{" in metrics

        # the 5-day cert entered the 7-day window and the refused port failed: both announced in
        # the audit log (published one after the other, in endpoint order: wait for both)
        await daemon.wait_for(
            "/api/v1/events",
            lambda s, b: {"ExpiryWindowEntered", "ProbeFailed"} <= {e["type"] for e in b},
        )
    finally:
        code = await daemon.stop(signal.SIGTERM)
    assert code == 0
    out = daemon.output()
    assert SECRET not in out and SECRET not in metrics
    log_lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    started = [line for line in log_lines if line.get("event") == "expressway-certd started"]
    head = migrations.script_directory().get_current_head()
    assert started and started[0]["schema"] == head
    assert started[0]["schema_upgraded_from"] == "empty"  # a new database: migrated at start
    assert any(line.get("event") == "expressway-certd stopped" for line in log_lines)
    assert (tmp_path / "state.db").stat().st_mode & 0o077 == 0

    # Restart without the refused endpoint: its series are gone, state carried over
    port2 = free_port()
    cfg2 = write_config(tmp_path, [good.port, other.port], trust_bundle, port2, "b.toml")
    daemon2 = await DaemonProcess(cfg2, port2, env={"CERTD_TEST_SECRET": SECRET}).start()
    try:
        await daemon2.wait_for("/healthz", lambda s, b: s == 200)
        _, metrics2 = await daemon2.get("/metrics")
        assert f'port="{refused}"' not in metrics2
        assert f'port="{good.port}"' in metrics2  # restored from the store before any poll
    finally:
        assert await daemon2.stop(signal.SIGINT) == 0
    restarted = [json.loads(line) for line in daemon2.output().splitlines() if "started" in line]
    assert restarted[-1]["schema"] == head and "schema_upgraded_from" not in restarted[-1]


async def test_hanging_endpoint_does_not_hold_shutdown(tmp_path, served, trust_bundle):
    hang = await served("hang")
    port = free_port()
    cfg = write_config(tmp_path, [hang.port], trust_bundle, port, "h.toml")
    # probes may hang for 40 s, far past the shutdown bound below; the first poll starts
    # within interval x jitter = 0.8 s
    text = cfg.read_text().replace('probe_timeout = "1s"', 'probe_timeout = "40s"')
    text = text.replace('poll_interval = "2s"', 'poll_interval = "60s"')
    cfg.write_text(text.replace("[daemon]\n", "[daemon]\njitter = 0.0133\n", 1))
    daemon = await DaemonProcess(cfg, port, env={"CERTD_TEST_SECRET": SECRET}).start()
    await daemon.wait_for("/healthz", lambda s, b: s == 200)
    await asyncio.sleep(1.0)  # the first poll starts within 1 s (jitter) and hangs
    # a probe is in flight against the silent endpoint; SIGTERM must not wait for its deadline
    assert await daemon.stop(signal.SIGTERM, timeout=15.0) == 0


async def test_bad_config_exits_with_a_clear_message(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[daemon]\npoll_intervall = '1m'\n")
    daemon = await DaemonProcess(cfg, free_port()).start()
    assert daemon.proc is not None
    code = await daemon.proc.wait()
    daemon._log_file.close()
    assert code == 2
    assert "daemon.poll_intervall: unknown key; did you mean 'poll_interval'?" in daemon.output()
