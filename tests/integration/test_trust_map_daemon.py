"""The daemon computes the trust map itself, against the lab over the boxes' real REST APIs,
and serves it over real HTTP: /metrics, /api/v1/trust-map(.svg) and the status page. A CA
removed from the Expressway-E's trusted list shows as broken at the next computation, and
clears when put back; no `trust-map` run, no timer."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from expressway_certd_lab.pki import CA
from expressway_certd_lab.renewal import set_daemon_keys
from expressway_certd_lab.topology import Lab

from expressway_certd.config import load_config
from expressway_certd.daemon import Daemon
from tests.helpers import free_port
from tests.integration.test_status_page import VisibleText, chromium

TRAVERSAL_C_TO_E = 'expressway_trust_relation_ok{from="expe-c1",to="expe-e1",relation="traversal"}'


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as resp:
        return resp.status, await resp.text()


async def until(check: Callable[[], Any], what: str, limit: float = 60.0) -> None:
    """Wait (bounded, never a pass/fail timing) until `check()` is true."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never saw {what}")


def c_to_e(doc: dict[str, Any]) -> dict[str, Any]:
    return next(
        r
        for r in doc["relations"]
        if (r["from"], r["to"], r["relation"]) == ("expe-c1", "expe-e1", "traversal")
    )


async def test_daemon_trust_map_breaks_and_heals_within_a_cycle(tmp_path: Path) -> None:
    async with Lab(tmp_path / "lab", restart_seconds=0.2) as lab:
        port = free_port()
        path = lab.write_config(tmp_path / "certd.toml")
        path.write_text(
            set_daemon_keys(
                path.read_text(),
                listen=f"127.0.0.1:{port}",
                poll_interval="1s",
                probe_timeout="0.9s",
                trust_map_interval="0.5s",
            )
        )
        daemon = Daemon(load_config(path))
        await daemon.start()
        base = f"http://127.0.0.1:{port}"
        try:
            assert daemon.trust_map is not None
            mapper = daemon.trust_map
            async with aiohttp.ClientSession() as http:

                async def metric_is(value: str) -> bool:
                    _, text = await get(http, f"{base}/metrics")
                    return f"{TRAVERSAL_C_TO_E} {value}" in text

                await until(lambda: metric_is("1.0"), "the first map")
                status, _ = await get(http, f"{base}/api/v1/trust-map")
                assert status == 200
                node = f"cucm1/{lab.cucm.host}"
                doc = await (await http.get(f"{base}/api/v1/trust-map")).json()
                got = {(r["from"], r["to"], r["store"]): r["status"] for r in doc["relations"]}
                assert got == {
                    ("expe-c1", "expe-e1", "trusted-ca"): "ok",
                    ("expe-e1", "expe-c1", "trusted-ca"): "ok",
                    ("expe-c1", node, "tomcat"): "ok",
                    ("expe-c1", node, "callmanager"): "ok",
                    (node, "expe-c1", "trusted-ca"): "ok",
                }

                # Someone removes the CA from the Expressway-E's trusted list.
                saved = list(lab.expressway_e.trusted_cas)
                runs_at_break = mapper.runs
                lab.expressway_e.trusted_cas.clear()
                await until(lambda: metric_is("0.0"), "the broken relation")
                # A computation in flight when the CA went may have read the old list; the
                # one after it must see the change.
                assert mapper.runs <= runs_at_break + 2
                doc = await (await http.get(f"{base}/api/v1/trust-map")).json()
                assert c_to_e(doc)["status"] == "broken"
                assert "no trusted anchor" in c_to_e(doc)["reason"]
                assert doc["earliest_break"] is not None
                _, text = await get(http, f"{base}/metrics")
                assert "expressway_trust_relation_break_timestamp_seconds{" in text
                # The picture: its own route and the status page, red where broken.
                async with http.get(f"{base}/api/v1/trust-map.svg") as resp:
                    assert resp.status == 200
                    assert resp.content_type == "image/svg+xml"
                    assert b'stroke="red"' in await resp.read()
                _, page = await get(http, f"{base}/")
                match = re.search(r"src='data:image/svg\+xml;base64,([^']+)'", page)
                assert match is not None
                assert b'stroke="red"' in base64.b64decode(match.group(1))

                lab.expressway_e.trusted_cas.extend(saved)
                await until(lambda: metric_is("1.0"), "the healed relation")
                doc = await (await http.get(f"{base}/api/v1/trust-map")).json()
                assert {r["status"] for r in doc["relations"]} == {"ok"}
                assert doc["earliest_break"] is None
        finally:
            await daemon.stop()


async def test_unified_cm_certificates_are_read_where_they_are_served(tmp_path: Path) -> None:
    """The C verifies Unified CM's CallManager certificate (SIP TLS) and its tomcat one
    (HTTPS) separately: a CallManager certificate from a CA the C does not trust breaks
    only the SIP TLS relation, read from what the node serves on its SIP TLS port."""
    async with Lab(tmp_path / "lab", restart_seconds=0.2) as lab:
        port = free_port()
        path = lab.write_config(tmp_path / "certd.toml")
        path.write_text(
            set_daemon_keys(path.read_text(), listen=f"127.0.0.1:{port}", trust_map_interval="0.5s")
        )
        other = CA.create("Other Issuing", parent=CA.create("Other Root"))
        cert, key = other.issue(str(lab.cucm.fqdn), [str(lab.cucm.fqdn)])
        lab.cucm.install_callmanager_now(cert, key)
        daemon = Daemon(load_config(path))
        await daemon.start()
        node = f"cucm1/{lab.cucm.host}"
        try:
            assert daemon.trust_map is not None
            first = daemon.trust_map.runs
            await until(lambda: _ran_after(daemon, first), "a trust map")
            async with aiohttp.ClientSession() as http:
                doc = await (await http.get(f"http://127.0.0.1:{port}/api/v1/trust-map")).json()
            got = {(r["from"], r["to"], r["relation"]): r for r in doc["relations"]}
            sip = got[(node, "expe-c1", "sip-tls")]
            assert sip["status"] == "broken"
            assert "Other" in sip["reason"]
            assert got[(node, "expe-c1", "https")]["status"] == "ok"
            assert got[("expe-c1", node, "sip-tls")]["status"] == "ok"  # the other direction
        finally:
            await daemon.stop()


async def _ran_after(daemon: Daemon, runs: int) -> bool:
    return daemon.trust_map is not None and daemon.trust_map.runs > runs


async def test_will_break_and_earliest_break_on_the_status_page(tmp_path: Path) -> None:
    """The E serves a certificate under a root that expires in 20 days: the daemon's map says
    the E -> C relation will break then, and a person sees it on the page in Chromium."""
    async with Lab(tmp_path / "lab", restart_seconds=0.2) as lab:
        c, e = lab.expressway_c, lab.expressway_e
        short = CA.create("Short Issuing", parent=CA.create("Short Root", days=20), days=20)
        leaf, key = short.issue(e.fqdn, [e.fqdn], days=365)
        e.install_now(leaf, key)
        for box in (c, e):
            box.trusted_cas.extend(short.chain())
        root_expiry = short.chain()[-1].not_valid_after_utc
        port = free_port()
        path = lab.write_config(tmp_path / "certd.toml")
        path.write_text(
            set_daemon_keys(
                path.read_text(),
                listen=f"127.0.0.1:{port}",
                poll_interval="1s",
                probe_timeout="0.9s",
                trust_map_interval="0.5s",
            )
        )
        daemon = Daemon(load_config(path))
        await daemon.start()
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:

                async def e_to_c_will_break() -> bool:
                    async with http.get(f"{base}/api/v1/trust-map") as resp:
                        if resp.status != 200:
                            return False
                        doc = await resp.json()
                    return any(
                        (r["from"], r["to"], r["status"]) == ("expe-e1", "expe-c1", "will break")
                        for r in doc["relations"]
                    )

                await until(e_to_c_will_break, "the relation that will break")
            dom = await chromium(base + "/", tmp_path / "profile-dom", "--dump-dom")
            shot = tmp_path / "status-page-trust.png"
            await chromium(
                base + "/", tmp_path / "profile-shot", f"--screenshot={shot}",
                "--window-size=1280,1400",
            )  # fmt: skip
        finally:
            await daemon.stop()
    parser = VisibleText()
    parser.feed(dom)
    text = parser.text
    when = f"{root_expiry:%Y-%m-%d %H:%M} UTC"
    assert f"Earliest break: {when}" in text
    row = f"expe-e1 expe-c1 traversal (trusted-ca) will break {when}"
    assert row in text
    assert "Short" in text[text.index(row) :]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_x15_5_client_certificate_presents_on_traversal(tmp_path: Path) -> None:
    """Both boxes upgraded to X15.5; the C's client store holds a certificate of a CA the E
    does not trust, while the C's served certificate is fine. The lab's zone fails (its model:
    the C opens TLS with its client certificate, Cisco doc 225693) and the daemon's map says
    traversal C -> E broken, naming the client certificate, in /metrics, the API and the page;
    the E trusting that CA clears both."""
    async with Lab(tmp_path / "lab", restart_seconds=0.2) as lab:
        c, e = lab.expressway_c, lab.expressway_e
        for box in (c, e):
            box.upgrade("X15.5")
        other = CA.create("Other Issuing", parent=CA.create("Other Root"))
        copy, key = other.issue(c.fqdn, [c.fqdn])
        c.install_client_now(copy, key)
        assert lab.traversal_zone.status()[0] == "Failed"  # the simulator's verdict
        assert c.served_cert.issuer != copy.issuer
        port = free_port()
        path = lab.write_config(tmp_path / "certd.toml")
        path.write_text(
            set_daemon_keys(
                path.read_text(),
                listen=f"127.0.0.1:{port}",
                poll_interval="1s",
                probe_timeout="0.9s",
                trust_map_interval="0.5s",
            )
        )
        daemon = Daemon(load_config(path))
        await daemon.start()
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:

                async def metric_is(value: str) -> bool:
                    _, text = await get(http, f"{base}/metrics")
                    return f"{TRAVERSAL_C_TO_E} {value}" in text

                await until(lambda: metric_is("0.0"), "the broken traversal relation")
                doc = await (await http.get(f"{base}/api/v1/trust-map")).json()
                rel = c_to_e(doc)
                assert (rel["status"], rel["presenter_cert"]) == ("broken", "client")
                assert "client certificate" in rel["reason"] and "Other" in rel["reason"]
                got = {(r["from"], r["to"], r["relation"]): r for r in doc["relations"]}
                e_to_c = got[("expe-e1", "expe-c1", "traversal")]
                assert (e_to_c["status"], e_to_c["presenter_cert"]) == ("ok", "server")
                _, page = await get(http, f"{base}/")
                assert "<tr><td>expe-c1 (client cert)</td><td>expe-e1</td>" in page
                async with http.get(f"{base}/api/v1/trust-map.svg") as resp:
                    assert b"client cert" in await resp.read()

                # The fix: the E trusts the CA of the C's client certificate.
                e.trusted_cas.extend(other.chain())
                assert lab.traversal_zone.status() == ("Active", "")
                await until(lambda: metric_is("1.0"), "the healed traversal relation")
                doc = await (await http.get(f"{base}/api/v1/trust-map")).json()
                assert c_to_e(doc)["status"] == "ok"
                _, page = await get(http, f"{base}/")
                assert "expe-c1 (client cert)</td><td>expe-e1" not in page
        finally:
            await daemon.stop()
