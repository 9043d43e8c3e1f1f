"""A real Prometheus (Debian `prometheus`) scrapes a running daemon that monitors the lab and has
renewed the Expressway-C's certificate from the lab EST CA; every Grafana panel's query must
parse and return data through Prometheus' HTTP API, and the daemon must export every metric
name the rules and the dashboard may use."""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from expressway_certd_lab.est import ESTSimulator
from expressway_certd_lab.renewal import add_renewal, est_ca_section, set_daemon_keys
from expressway_certd_lab.topology import Lab

from tests.helpers import DaemonProcess, free_port, need_binary
from tests.integration.test_promtool_rules import (
    DAEMON_METRICS,
    GRAFANA_VARIABLES,
    dashboard_queries,
    rule_exprs,
)
from tests.keypool import KEY_POOL

pytestmark = pytest.mark.integration

RENEWING = "expe-c1"  # the lab's Expressway-C: renewal configured, certificate due at once
# Empty in a healthy fleet: no CA request has failed (the panel shows its 0 fallback).
MAY_BE_FALLBACK = (
    "expressway_ca_errors_total",
    "expressway_cert_lint_finding",  # the lab's certificates draw no lint advisory
    "expressway_served_cert_mismatch",  # every port serves what the box reports installed
    # the lab's boxes run X15.4: no X15.5 client certificate is read, so no series for it
    "expressway_client_cert_status",
    "expressway_client_cert_read_timestamp_seconds",
    # exported after the daemon's first trust-map run (or a `trust-map` run's trust-map.json)
    "expressway_trust_relation_ok",
    "expressway_trust_relation_break_timestamp_seconds",
    "expressway_trust_map_generated_timestamp_seconds",
    # the renewal has placed its order: nothing in the backlog, no earliest expiry in it
    "expressway_renewal_backlog_earliest_expiry_timestamp_seconds",
)


async def prom_query(session: aiohttp.ClientSession, base: str, expr: str) -> dict[str, Any]:
    async with session.get(f"{base}/api/v1/query", params={"query": expr}) as resp:
        body = await resp.json()
        assert resp.status == 200 and body["status"] == "success", f"{expr}: {body}"
        return body["data"]  # type: ignore[no-any-return]


def is_fallback(sample: dict[str, Any]) -> bool:
    """The `or on () label_replace(vector(0), "x", "none", "", "")` sample of an empty panel."""
    return list(sample["metric"].values()) == ["none"] and sample["value"][1] == "0"


@pytest.mark.timeout(300)
async def test_dashboard_queries_return_data_from_a_real_prometheus(tmp_path: Path) -> None:
    prometheus = need_binary("prometheus")
    port = free_port()
    est = ESTSimulator().start()
    try:
        async with Lab(
            tmp_path / "lab", csr_keys=KEY_POOL, restart_seconds=1.0, cert_days=10
        ) as lab:
            cfg = lab.write_config(tmp_path / "certd.toml")
            text = add_renewal(cfg.read_text(), RENEWING, 'ca = "lab-est"')
            text = set_daemon_keys(
                text,
                listen=f"127.0.0.1:{port}",
                poll_interval="2s",
                probe_timeout="1s",
                renewal_check="1s",
            )
            cfg.write_text(text + est_ca_section(est, tmp_path))
            endpoints = sum(len(sim.listeners) for sim in lab.expressways)
            await run_prometheus_against_daemon(prometheus, tmp_path, cfg, port, endpoints)
    finally:
        est.stop()


async def run_prometheus_against_daemon(
    prometheus: str, tmp_path: Path, cfg: Path, port: int, endpoints: int
) -> None:
    prom_port = free_port()
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    (prom_dir / "prometheus.yml").write_text(
        f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: expressway-certd
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""
    )
    prom = await asyncio.create_subprocess_exec(
        prometheus,
        f"--config.file={prom_dir / 'prometheus.yml'}",
        f"--storage.tsdb.path={prom_dir / 'data'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=(prom_dir / "prometheus.log").open("wb"),
    )
    daemon = await DaemonProcess(cfg, port).start()
    base = f"http://127.0.0.1:{prom_port}"
    try:
        renewals = await daemon.wait_for(
            f"/api/v1/renewals?target={RENEWING}",
            lambda s, b: s == 200 and any(r["status"] in ("done", "blocked") for r in b),
            timeout=150,
        )
        assert [r["status"] for r in renewals] == ["done"], renewals
        async with aiohttp.ClientSession() as session:
            # Every endpoint's certificate, and the finished renewal, seen by Prometheus; then
            # a few more scrapes so that rate() and increase() have two samples.
            await wait_for_prometheus(
                session,
                base,
                prom,
                prom_dir,
                {
                    "count(expressway_cert_info)": str(endpoints),
                    f'count(expressway_renewal_state{{target="{RENEWING}",state="idle"}} == 1)': "1",
                    "count(expressway_renewal_last_success_timestamp_seconds)": "1",
                    "count(expressway_renewal_next_timestamp_seconds)": "1",
                },
            )
            await asyncio.sleep(3)
            up = await prom_query(session, base, 'up{job="expressway-certd"}')
            assert up["result"][0]["value"][1] == "1"

            names = await prom_query(
                session, base, 'group by (__name__) ({job="expressway-certd"})'
            )
            exported = {r["metric"]["__name__"] for r in names["result"]}
            missing = DAEMON_METRICS - exported - set(MAY_BE_FALLBACK)
            assert not missing, f"the daemon does not export {sorted(missing)}"

            # The renewal alerts stay silent after a good renewal; the installed certificate's
            # fingerprint is written as the served one's (else RestartPending would always fire).
            served = await prom_query(
                session,
                base,
                "expressway_renewal_installed_info and on (target, sha256) expressway_cert_info",
            )
            assert [r["metric"]["target"] for r in served["result"]] == [RENEWING], served
            for name, expr in rule_exprs().items():
                if name.startswith(("ExpresswayRenewal", "ExpresswayRestart", "ExpresswayCA")):
                    result = (await prom_query(session, base, expr))["result"]
                    assert not result, f"{name} would fire after a good renewal: {result}"

            queries = dashboard_queries()
            assert len(queries) >= 14
            for target in (".*", RENEWING):
                for where, template in queries:
                    expr = template
                    for var, value in {"$target": target, **GRAFANA_VARIABLES}.items():
                        expr = expr.replace(var, value)
                    result = (await prom_query(session, base, expr))["result"]
                    assert result, f"{where} returned no data for target={target}: {expr}"
                    values = [float(r["value"][1]) for r in result]
                    assert not all(math.isnan(v) for v in values), (
                        f"{where} returned only NaN for target={target}: {expr}"
                    )
                    if not any(m in template for m in MAY_BE_FALLBACK):
                        assert not all(is_fallback(r) for r in result), (
                            f"{where} shows 'none' after a renewal, target={target}: {expr}"
                        )
    finally:
        if prom.returncode is None:
            prom.send_signal(signal.SIGTERM)
            await asyncio.wait_for(prom.wait(), 20)
        assert await daemon.stop() == 0


async def wait_for_prometheus(
    session: aiohttp.ClientSession,
    base: str,
    prom: asyncio.subprocess.Process,
    prom_dir: Path,
    expected: dict[str, str],
) -> None:
    deadline = time.monotonic() + 60
    last: dict[str, Any] = {}
    while True:
        with contextlib.suppress(aiohttp.ClientError, AssertionError):
            for expr, value in expected.items():
                data = await prom_query(session, base, expr)
                last[expr] = data["result"]
                assert data["result"] and data["result"][0]["value"][1] == value
            return
        if prom.returncode is not None or time.monotonic() > deadline:
            log = (prom_dir / "prometheus.log").read_text(errors="replace")
            pytest.fail(f"Prometheus never saw the daemon's metrics: {last}\n{log[-3000:]}")
        await asyncio.sleep(0.5)
