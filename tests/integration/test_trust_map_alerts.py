"""Each relation kind broken on purpose on the lab, seen by a real Prometheus (Debian
`prometheus`) running the shipped rules against the daemon: the map (API), the metric, the
alert (Prometheus' own /api/v1/alerts, rules file unchanged) and the status page each show
it, and fixing it clears them all (issue 12, first "Done when" line).

Relations broken: a CA removed from the Expressway-E (C -> E broken); a trusted root that
expires before the E's certificate (E -> C will break); a pending renewal of the E whose new
CA only the E would learn (E -> C will break: its trust stage does not reach the C); the C
upgraded to X15.5 with a client certificate of a CA the E does not trust (C -> E broken,
presented by the client certificate). ExpresswayTrustRelationBroken has `for: 15m`, so it is
seen `pending` (its expression holds); ExpresswayTrustRelationWillBreak has no `for` and fires.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from expressway_certd_lab.pki import CA
from expressway_certd_lab.renewal import set_daemon_keys
from expressway_certd_lab.topology import Lab

from expressway_certd.config import load_config
from expressway_certd.daemon import Daemon
from expressway_certd.monitor.store import RenewalRow
from tests.helpers import free_port, need_binary
from tests.integration.test_promtool_rules import RULES

pytestmark = pytest.mark.integration

Key = tuple[str, str, str]  # alertname, from, to (relation "traversal" throughout)


async def until(check: Callable[[], Awaitable[bool]], what: str, limit: float = 60.0) -> None:
    """Wait (bounded, never a pass/fail timing) until `check()` is true."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"never saw {what}")


class View:
    """What the daemon and Prometheus show, read over HTTP."""

    def __init__(self, http: aiohttp.ClientSession, daemon: str, prometheus: str) -> None:
        self.http, self.daemon, self.prometheus = http, daemon, prometheus

    async def alerts(self) -> dict[Key, str]:
        """(alertname, from, to) -> state, for the trust alerts on traversal relations."""
        try:
            async with self.http.get(f"{self.prometheus}/api/v1/alerts") as resp:
                doc = await resp.json()
        except aiohttp.ClientError:
            return {}
        out: dict[Key, str] = {}
        for alert in doc["data"]["alerts"]:
            labels = alert["labels"]
            if labels["alertname"].startswith("ExpresswayTrustRelation") and (
                labels.get("relation") == "traversal"
            ):
                out[(labels["alertname"], labels["from"], labels["to"])] = alert["state"]
        return out

    async def metrics(self) -> str:
        async with self.http.get(f"{self.daemon}/metrics") as resp:
            return await resp.text()

    async def relation(self, presenter: str, verifier: str) -> dict[str, Any]:
        async with self.http.get(f"{self.daemon}/api/v1/trust-map") as resp:
            doc = await resp.json()
        return next(
            r
            for r in doc["relations"]
            if (r["from"], r["to"], r["relation"]) == (presenter, verifier, "traversal")
        )

    async def page(self) -> str:
        async with self.http.get(f"{self.daemon}/") as resp:
            return await resp.text()

    async def shows(
        self, presenter: str, verifier: str, status: str, alert: str, label: str = ""
    ) -> None:
        """The map, the metric, the alert and the page all show the relation as `status`."""
        key = (alert, presenter, verifier)
        expected = "firing" if alert.endswith("WillBreak") else "pending"

        async def alerted() -> bool:
            return (await self.alerts()).get(key) == expected

        await until(alerted, f"{alert} {expected} for {presenter} -> {verifier}")
        rel = await self.relation(presenter, verifier)
        assert rel["status"] == status, rel
        series = f'expressway_trust_relation_ok{{from="{presenter}",to="{verifier}",relation="traversal"}}'
        value = "0.0" if status == "broken" else "1.0"
        assert f"{series} {value}" in await self.metrics()
        row = f"<tr><td>{label or presenter}</td><td>{verifier}</td><td>traversal (trusted-ca)</td>"
        page = await self.page()
        assert row in page and f">{status}</td>" in page[page.index(row) :]

    async def clear(self, presenter: str, verifier: str) -> None:
        """Fixed: ok in the map and the metric, no trust alert, no row on the page."""

        async def cleared() -> bool:
            rel = await self.relation(presenter, verifier)
            return rel["status"] == "ok" and not await self.alerts()

        await until(cleared, f"{presenter} -> {verifier} cleared")
        series = f'expressway_trust_relation_ok{{from="{presenter}",to="{verifier}",relation="traversal"}}'
        assert f"{series} 1.0" in await self.metrics()
        assert "<table id='trust'>" not in await self.page()


async def start_prometheus(
    prometheus: str, workdir: Path, daemon_port: int
) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    workdir.mkdir()
    (workdir / "prometheus.yml").write_text(
        f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {RULES}
scrape_configs:
  - job_name: expressway-certd
    static_configs:
      - targets: ["127.0.0.1:{daemon_port}"]
"""
    )
    proc = await asyncio.create_subprocess_exec(
        prometheus,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=(workdir / "prometheus.log").open("wb"),
    )
    return proc, f"http://127.0.0.1:{port}"


def pending_row(target: str, ca: CA, cn: str) -> RenewalRow:
    """An active renewal of `target` holding an issued certificate of `ca` (not installed)."""
    leaf, _ = ca.issue(cn, [cn], days=365)
    now = datetime.now(UTC)
    pem = serialization.Encoding.PEM
    return RenewalRow(
        id=f"r-{target}-new-ca", target=target, status="waiting", stage="approve",
        reason="test", created_at=now, updated_at=now, next_at=None, attempts=0,
        message="", data={"issued": {
            "leaf_pem": leaf.public_bytes(pem).decode(),
            "chain_pem": "".join(x.public_bytes(pem).decode() for x in ca.chain()),
        }},
    )  # fmt: skip


@pytest.mark.timeout(420)
async def test_each_relation_kind_in_map_metric_alert_and_page(tmp_path: Path) -> None:
    prometheus = need_binary("prometheus")
    async with Lab(tmp_path / "lab", restart_seconds=0.2) as lab:
        c, e = lab.expressway_c, lab.expressway_e
        port = free_port()
        path = lab.write_config(tmp_path / "certd.toml")
        text = set_daemon_keys(
            path.read_text(),
            listen=f"127.0.0.1:{port}",
            poll_interval="1s",
            probe_timeout="0.9s",
            trust_map_interval="0.5s",
        )
        # The E's renewal then reaches only the E itself (no traversal peer to upload to).
        e_block = text.index('name = "expe-e1"')
        peer_line = 'traversal_peer = "expe-c1"\n'
        cut = text.index(peer_line, e_block)
        text = text[:cut] + text[cut + len(peer_line) :]
        # No configured `version`: the daemon reads it from the boxes, so it sees the upgrade
        # (a configured version is believed, as for the client certificate read).
        text = "".join(line for line in text.splitlines(True) if not line.startswith("version ="))
        path.write_text(text)
        daemon = Daemon(load_config(path))
        await daemon.start()
        prom, prom_base = await start_prometheus(prometheus, tmp_path / "prometheus", port)
        try:
            async with aiohttp.ClientSession() as http:
                view = View(http, f"http://127.0.0.1:{port}", prom_base)

                async def healthy() -> bool:
                    if prom.returncode is not None or daemon.trust_map is None:
                        return False
                    latest = daemon.trust_map.latest
                    return latest is not None and {j.status for j in latest.judgements} == {"ok"}

                await until(healthy, "a healthy first map")

                # 1. Someone removes the CA from the Expressway-E's trusted list.
                saved = list(e.trusted_cas)
                e.trusted_cas.clear()
                await view.shows("expe-c1", "expe-e1", "broken", "ExpresswayTrustRelationBroken")
                e.trusted_cas.extend(saved)
                await view.clear("expe-c1", "expe-e1")

                # 2. The E serves a certificate under a root that expires in 20 days.
                original = (e.installed.cert, e.installed.key)
                short = CA.create("Short Issuing", parent=CA.create("Short Root", days=20), days=20)
                leaf, key = short.issue(e.fqdn, [e.fqdn], days=365)
                for box in (c, e):
                    box.trusted_cas.extend(short.chain())
                e.install_now(leaf, key)
                await view.shows(
                    "expe-e1", "expe-c1", "will break", "ExpresswayTrustRelationWillBreak"
                )
                e.install_now(*original)
                await view.clear("expe-e1", "expe-c1")

                # 3. A renewal of the E holds a certificate of a new CA that only the E
                # would learn (its trust stage does not reach the C).
                next_ca = CA.create("Next Issuing", parent=CA.create("Next Root"))
                assert daemon.store is not None
                await daemon.store.create_renewal(pending_row("expe-e1", next_ca, e.fqdn))
                await view.shows(
                    "expe-e1", "expe-c1", "will break", "ExpresswayTrustRelationWillBreak"
                )
                assert "pending renewal" in (await view.relation("expe-e1", "expe-c1"))["reason"]
                c.trusted_cas.append(next_ca.chain()[-1])
                await view.clear("expe-e1", "expe-c1")

                # 4. Both boxes upgraded to X15.5; the C's client store holds a certificate of
                # a CA the E does not trust (its served certificate is still fine).
                other = CA.create("Other Issuing", parent=CA.create("Other Root"))
                for box in (c, e):
                    box.upgrade("X15.5")
                copy, copy_key = other.issue(c.fqdn, [c.fqdn])
                c.install_client_now(copy, copy_key)
                # Unified CM is told at once, so that only the traversal relation breaks.
                for store in ("callmanager", "tomcat"):
                    lab.cucm.trust[store].extend(other.chain())
                await view.shows(
                    "expe-c1",
                    "expe-e1",
                    "broken",
                    "ExpresswayTrustRelationBroken",
                    label="expe-c1 (client cert)",
                )
                rel = await view.relation("expe-c1", "expe-e1")
                assert rel["presenter_cert"] == "client" and "Other" in rel["reason"]
                assert lab.traversal_zone.status()[0] == "Failed"  # the simulator agrees
                e.trusted_cas.extend(other.chain())
                assert lab.traversal_zone.status() == ("Active", "")
                await view.clear("expe-c1", "expe-e1")
        finally:
            if prom.returncode is None:
                prom.send_signal(signal.SIGTERM)
                await asyncio.wait_for(prom.wait(), 20)
            await daemon.stop()
