"""The renewal API of a running daemon: list, detail, token-protected approve and cancel."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp
from cryptography.hazmat.primitives import hashes
from expressway_certd_lab.est import ESTSimulator
from expressway_certd_lab.renewal import add_renewal, est_ca_section, set_daemon_keys
from expressway_certd_lab.topology import Lab

from expressway_certd.config import load_config
from expressway_certd.daemon import Daemon
from expressway_certd.monitor.facts import load_certificates
from tests.keypool import KEY_POOL

TOKEN = "approve-token-0123456789"


async def wait_for(session, url, predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        async with session.get(url) as resp:
            body = await resp.json()
        if predicate(body):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.2)


async def test_approve_over_the_api(tmp_path):
    est = ESTSimulator().start()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    os.chmod(token_file, 0o600)
    try:
        async with Lab(
            tmp_path / "lab", csr_keys=KEY_POOL, restart_seconds=0.3, cert_days=10
        ) as lab:
            path = lab.write_config(tmp_path / "certd.toml")
            text = add_renewal(path.read_text(), "expe-c1", 'ca = "lab-est", approval = "manual"')
            text = set_daemon_keys(
                text, listen="127.0.0.1:0", renewal_check="0.5s", api_token=f"file:{token_file}"
            )
            path.write_text(text + est_ca_section(est, tmp_path))
            daemon = Daemon(load_config(path))
            await daemon.start()
            base = f"http://127.0.0.1:{daemon.http_port}/api/v1"
            try:
                async with aiohttp.ClientSession() as session:
                    (row,) = await wait_for(
                        session,
                        f"{base}/renewals",
                        lambda b: b and b[0]["stage"] == "approve" and b[0]["status"] == "waiting",
                    )
                    rid = row["id"]
                    async with session.get(f"{base}/renewals/{rid}") as resp:
                        detail = await resp.json()
                    assert [s["stage"] for s in detail["steps"]][:7] == [
                        "snapshot", "preflight", "csr", "submit", "issued", "validate", "trust",
                    ]  # fmt: skip
                    assert "BEGIN CERTIFICATE REQUEST" in detail["csr_pem"]
                    url = f"{base}/renewals/{rid}/approve"
                    async with session.post(url) as resp:
                        assert resp.status == 401
                    async with session.post(url, headers={"Authorization": "Bearer nope"}) as resp:
                        assert resp.status == 401
                    auth = {"Authorization": f"Bearer {TOKEN}"}
                    for bad in ("<script>x</script>", "b" * 65, "bob%1b%5B31m"):
                        async with session.post(f"{url}?by={bad}", headers=auth) as resp:
                            assert resp.status == 400, bad  # refused, nothing approved
                    async with session.post(url + "?by=bob", headers=auth) as resp:
                        assert resp.status == 200, await resp.text()
                    done = await wait_for(
                        session, f"{base}/renewals/{rid}", lambda b: b["status"] == "done"
                    )
                    assert done["approved_by"] == "bob"
                    async with session.post(url, headers=auth) as resp:
                        assert resp.status == 409  # nothing to approve any more
                    # The runner saves a stage's row before it counts the stage in the metrics
                    # (persist first), so the API can say "done" a moment before /metrics does.
                    verify_counted = 'expressway_renewal_stage_total{result="advance",stage="verify",target="expe-c1"} 1.0'
                    metrics = ""
                    for _ in range(100):
                        async with session.get(
                            f"http://127.0.0.1:{daemon.http_port}/metrics"
                        ) as resp:
                            metrics = await resp.text()
                        if verify_counted in metrics:
                            break
                        await asyncio.sleep(0.05)
                    assert verify_counted in metrics
                    assert (
                        'expressway_renewal_state{stage="",state="idle",target="expe-c1"} 1.0'
                        in metrics
                    )
                    assert "expressway_renewal_last_success_timestamp_seconds" in metrics
                    assert TOKEN not in metrics
            finally:
                await daemon.stop()
    finally:
        est.stop()


async def test_cancel_over_the_api_then_start_afresh(tmp_path):
    """Issue 13, finding 3: a token-protected cancel from any state; the approval request
    names the new CA's fingerprints (finding 2)."""
    est = ESTSimulator().start()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    os.chmod(token_file, 0o600)
    try:
        async with Lab(
            tmp_path / "lab", csr_keys=KEY_POOL, restart_seconds=0.3, cert_days=10
        ) as lab:
            path = lab.write_config(tmp_path / "certd.toml")
            text = add_renewal(path.read_text(), "expe-c1", 'ca = "lab-est", approval = "manual"')
            text = set_daemon_keys(
                text, listen="127.0.0.1:0", renewal_check="0.5s", api_token=f"file:{token_file}"
            )
            path.write_text(text + est_ca_section(est, tmp_path))
            daemon = Daemon(load_config(path))
            await daemon.start()
            base = f"http://127.0.0.1:{daemon.http_port}/api/v1"
            try:
                async with aiohttp.ClientSession() as session:
                    (row,) = await wait_for(
                        session,
                        f"{base}/renewals",
                        lambda b: b and b[0]["stage"] == "approve" and b[0]["status"] == "waiting",
                    )
                    rid = row["id"]
                    # The runner saves the row, then publishes the event (stored by the bus):
                    # the row can read waiting a moment before the event is in the log.
                    events = await wait_for(
                        session,
                        f"{base}/events?limit=1000",
                        lambda b: any(e["type"] == "ApprovalRequired" for e in b),
                    )
                    (approval,) = [e for e in events if e["type"] == "ApprovalRequired"]
                    est_root = load_certificates(est.trust_anchor.read_bytes())[0]
                    root_sha = est_root.fingerprint(hashes.SHA256()).hex()
                    assert root_sha in approval["payload"]["new_ca_sha256"]
                    assert root_sha in approval["summary"]

                    url = f"{base}/renewals/{rid}/cancel"
                    async with session.post(url) as resp:
                        assert resp.status == 401
                    auth = {"Authorization": f"Bearer {TOKEN}"}
                    async with session.post(url + "?by=carol", headers=auth) as resp:
                        assert resp.status == 200, await resp.text()
                        assert (await resp.json())["status"] == "cancelled"
                    async with session.post(url, headers=auth) as resp:
                        assert resp.status == 409  # already cancelled
                    assert lab.expressway_c.uploads == 0  # cancelled before install
                    renew = f"{base}/targets/expe-c1/renew"
                    async with session.post(renew + "?kind=both", headers=auth) as resp:
                        assert resp.status == 400 and "kind must be one of" in await resp.text()
                    async with session.post(renew, headers=auth) as resp:
                        assert resp.status == 202
                        started = await resp.json()
                        assert started["id"] != rid and started["kind"] == "server"
                    # one renewal per box at a time: the client certificate waits for it
                    async with session.post(renew + "?kind=client", headers=auth) as resp:
                        assert resp.status == 409
                        assert f"renewal {started['id']} of the server certificate" in (
                            await resp.text()
                        )
            finally:
                await daemon.stop()
    finally:
        est.stop()
