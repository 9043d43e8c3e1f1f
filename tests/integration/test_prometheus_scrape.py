"""A real Prometheus (Debian `prometheus`) scrapes a running daemon that monitors lab endpoints;
every Grafana panel's query must parse and return data through Prometheus' HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import need_binary
from tests.helpers import DaemonProcess, free_port
from tests.integration.test_promtool_rules import GRAFANA_VARIABLES, dashboard_queries

pytestmark = pytest.mark.integration


async def prom_query(session: aiohttp.ClientSession, base: str, expr: str) -> dict:
    async with session.get(f"{base}/api/v1/query", params={"query": expr}) as resp:
        body = await resp.json()
        assert resp.status == 200 and body["status"] == "success", f"{expr}: {body}"
        return body["data"]


async def test_dashboard_queries_return_data_from_a_real_prometheus(
    tmp_path: Path, served, trust_bundle
):
    prometheus = need_binary("prometheus")
    c = await served(cn="expc1.example.com", sans=["expc1.example.com", "expc.example.com"])
    e = await served(cn="expe1.example.com", sans=["expe1.example.com"], days=20)
    x = await served("xmpp", cn="expe1.example.com", sans=["expe1.example.com"], days=20)
    port = free_port()
    cfg = tmp_path / "certd.toml"
    cfg.write_text(
        f"""
[daemon]
listen = "127.0.0.1:{port}"
state = "{tmp_path / "state.db"}"
poll_interval = "2s"
probe_timeout = "1s"
trust_bundle = "{trust_bundle}"

[[expressway]]
name = "expc1"
role = "c"
address = "expc1.example.com"
cluster = "expc.example.com"
endpoints = [{{ host = "127.0.0.1", port = {c.port}, service = "https", sni = "expc1.example.com" }}]

[[expressway]]
name = "expe1"
role = "e"
address = "expe1.example.com"
endpoints = [
  {{ host = "127.0.0.1", port = {e.port}, service = "mra", sni = "expe1.example.com" }},
  {{ host = "127.0.0.1", port = {x.port}, service = "xmpp", starttls = "xmpp", sni = "expe1.example.com" }},
]
"""
    )
    daemon = await DaemonProcess(cfg, port).start()
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
    base = f"http://127.0.0.1:{prom_port}"
    try:
        await daemon.wait_for("/api/v1/endpoints", lambda s, b: s == 200 and len(b) == 3)
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(aiohttp.ClientError, AssertionError):
                    data = await prom_query(session, base, "count(expressway_cert_info)")
                    if data["result"] and data["result"][0]["value"][1] == "3":
                        break
                if prom.returncode is not None or time.monotonic() > deadline:
                    log = (prom_dir / "prometheus.log").read_text(errors="replace")
                    pytest.fail(f"Prometheus never saw the daemon's metrics:\n{log[-3000:]}")
                await asyncio.sleep(0.5)
            up = await prom_query(session, base, 'up{job="expressway-certd"}')
            assert up["result"][0]["value"][1] == "1"

            queries = dashboard_queries()
            assert len(queries) >= 8
            for target in (".*", "expe1"):
                for where, template in queries:
                    expr = template
                    for var, value in {"$target": target, **GRAFANA_VARIABLES}.items():
                        expr = expr.replace(var, value)
                    data = await prom_query(session, base, expr)
                    assert data["result"], f"{where} returned no data for target={target}: {expr}"
    finally:
        if prom.returncode is None:
            prom.send_signal(signal.SIGTERM)
            await asyncio.wait_for(prom.wait(), 20)
        assert await daemon.stop() == 0
