"""Deadline risk on the lab, as a daemon process: a weekly window, approval required and 9 days
left make the margin fall below 7 days, in /metrics, on the status page and in the shipped
alert rule as a real Prometheus evaluates it, naming the factor."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import time
from datetime import UTC, datetime, timedelta

import aiohttp
from expressway_certd_lab.est import ESTSimulator
from expressway_certd_lab.renewal import est_ca_section
from expressway_certd_lab.topology import Lab

from tests.e2e.daemon_lab import LabDaemon, daemon_config
from tests.helpers import free_port, need_binary
from tests.integration.test_trust_map_alerts import start_prometheus
from tests.keypool import KEY_POOL


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "expressway_certd.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


MARGIN = re.compile(
    r'^expressway_renewal_deadline_margin_seconds\{dominating="([^"]+)",target="expe-c1"\} (\S+)$',
    re.M,
)


async def deadline_alert(prometheus: str, tmp_path, port: int) -> dict:
    """ExpresswayRenewalDeadlineAtRisk as a real Prometheus with the shipped rules sees it."""
    prom, base = await start_prometheus(prometheus, tmp_path / "prometheus", port)
    deadline = time.monotonic() + 60
    try:
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline and prom.returncode is None:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{base}/api/v1/alerts") as resp:
                        alerts = (await resp.json())["data"]["alerts"]
                    for alert in alerts:
                        if alert["labels"]["alertname"] == "ExpresswayRenewalDeadlineAtRisk":
                            assert alert["state"] == "pending"
                            return alert
                await asyncio.sleep(0.5)
    finally:
        if prom.returncode is None:
            prom.send_signal(signal.SIGTERM)
            await asyncio.wait_for(prom.wait(), 20)
    raise AssertionError("Prometheus never showed ExpresswayRenewalDeadlineAtRisk")


async def test_weekly_window_approval_and_nine_days_left(tmp_path):
    # The only window opens in six days: waiting for it dominates the 2-day default approval.
    # expe-c1 has a Unified CM without a window of its own: its services restart in the
    # target's window first (stage ucm-restart), so the wait is named "unified cm window".
    opens = datetime.now(UTC) + timedelta(days=6)
    weekday = (opens.weekday() + 1) % 7  # cron counts from Sunday
    renewal = (
        f'ca = "lab-est", approval = "manual", '
        f'maintenance_window = {{ cron = "0 0 * * {weekday}", timezone = "UTC" }}'
    )
    est = ESTSimulator().start()
    try:
        async with Lab(
            tmp_path / "lab", csr_keys=KEY_POOL, restart_seconds=0.3, cert_days=9
        ) as lab:
            port = free_port()
            config = daemon_config(
                lab, tmp_path, {"expe-c1": renewal}, est_ca_section(est, tmp_path), port=port
            )
            async with LabDaemon(config, port) as daemon:
                text = await daemon.wait_for(
                    "/metrics", lambda status, body: status == 200 and MARGIN.search(body)
                )
                dominating, value = MARGIN.search(text).groups()
                assert dominating == "unified cm window"
                margin = float(value)
                assert 2 * 86400 < margin < 7 * 86400  # about 3 days: at risk
                status, page = await daemon.get("/")
                assert status == 200
                assert "Deadline risks" in page
                assert "dominated by unified cm window" in page
                # expe-e1 has no renewal: no estimate, no series
                series = [
                    line
                    for line in text.splitlines()
                    if line.startswith("expressway_renewal_deadline_margin_seconds{")
                ]
                assert len(series) == 1
                # The shipped rule, in a real Prometheus scraping this daemon: the alert is
                # pending (its expression holds; `for: 15m` is longer than a test) and names
                # the dominating factor.
                alert = await deadline_alert(need_binary("prometheus"), tmp_path, port)
                assert alert["labels"]["target"] == "expe-c1"
                assert alert["labels"]["dominating"] == "unified cm window"
                assert "The largest delay is the unified cm window" in " ".join(
                    alert["annotations"]["description"].split()
                )
            # `plan` prints the same estimate (read-only against the box).
            code, out, err = await cli("plan", "expe-c1", "--config", str(config), "--json")
            assert code == 0, out + err
            deadline = json.loads(out)["deadline"]
            assert deadline["at_risk"] is True
            assert deadline["dominating"] == "unified cm window"
            assert abs(deadline["margin_seconds"] - margin) < 3600
    finally:
        est.stop()
