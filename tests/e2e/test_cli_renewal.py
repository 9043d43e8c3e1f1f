"""The renewal verbs as an operator runs them: plan (no side effects), renew, status."""

from __future__ import annotations

import asyncio
import json
import sys

from cryptography.hazmat.primitives import hashes
from expressway_certd_lab.est import ESTSimulator
from expressway_certd_lab.renewal import add_renewal, est_ca_section
from expressway_certd_lab.topology import Lab

from expressway_certd.monitor.facts import load_certificates
from expressway_certd.renewers.pipeline import STAGES
from tests.keypool import KEY_POOL


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "expressway_certd.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_plan_renew_status(tmp_path):
    est = ESTSimulator().start()
    try:
        async with Lab(
            tmp_path / "lab", csr_keys=KEY_POOL, restart_seconds=0.3, cert_days=10
        ) as lab:
            path = lab.write_config(tmp_path / "certd.toml")
            text = add_renewal(path.read_text(), "expe-c1", 'ca = "lab-est"')
            path.write_text(text + est_ca_section(est, tmp_path))
            c = lab.expressway_c
            before = (c.served_cert, c.installed.cert, c.pending)

            code, out, err = await cli("plan", "expe-c1", "--config", str(path), "--json")
            assert code == 0, err
            plan = json.loads(out)
            assert plan["sans"] == ["expe-c1.lab.example", "expressway-c.lab.example"]
            assert plan["required_eku"] == [
                "TLS Web Server Authentication",
                "TLS Web Client Authentication",
            ]
            assert plan["ca_change"] is True
            assert plan["trust_to"][:2] == ["expe-c1", "expe-e1"] and "cucm1" in plan["trust_to"][2]
            assert plan["problems"] == []
            root_sha = (
                load_certificates(est.trust_anchor.read_bytes())[0]
                .fingerprint(hashes.SHA256())
                .hex()
            )
            assert root_sha in [ca["sha256"] for ca in plan["new_ca"]]
            assert plan["new_ca_pinned"] is True
            assert (c.served_cert, c.installed.cert, c.pending) == before  # a dry run
            assert est.submissions == 0

            code, out, err = await cli("plan", "expe-c1", "--config", str(path))
            assert code == 0 and "7 trust     CA change: YES" in out
            assert f"SHA-256 {root_sha} (chains to a pinned root)" in out

            code, out, err = await cli("renew", "expe-c1", "--config", str(path))
            assert code == 0, out + err
            for stage in STAGES:
                assert f"expe-c1    {stage:<10} ok" in out, stage
            assert c.served_cert != before[0]

            code, out, err = await cli("status", "expe-c1", "--config", str(path), "--json")
            (item,) = json.loads(out)
            assert item["renewal"]["status"] == "done"
            assert [s["stage"] for s in item["renewal"]["steps"]] == list(STAGES)
            assert root_sha in [ca["sha256"] for ca in item["renewal"]["new_ca"]]

            code, out, err = await cli("renew", "expe-c1", "--config", str(path))
            assert code == 0 and "not due" in out  # the new certificate is fresh
            assert est.submissions == 1

            code, out, err = await cli("approve", "nope", "--config", str(path))
            assert code == 2 and "no such renewal" in err
            code, out, err = await cli("renew", "expe-e1", "--config", str(path))
            assert code == 2 and "monitored only" in err
    finally:
        est.stop()


async def test_plan_shows_both_certificates_of_an_x15_5_box(tmp_path):
    """An X15.5 C keeps a client certificate (copied at upgrade): `plan` shows it next to the
    server certificate; an X15.4 box has none and says so in JSON only."""
    est = ESTSimulator().start()
    try:
        async with Lab(
            tmp_path / "lab", csr_keys=KEY_POOL, restart_seconds=0.3, c_version="X15.5"
        ) as lab:
            path = lab.write_config(tmp_path / "certd.toml")
            text = add_renewal(path.read_text(), "expe-c1", 'ca = "lab-est"')
            text = add_renewal(text, "expe-e1", 'ca = "lab-est"')
            path.write_text(text + est_ca_section(est, tmp_path))
            c = lab.expressway_c
            client_sha = c.client_cert.fingerprint(hashes.SHA256()).hex()

            code, out, err = await cli("plan", "expe-c1", "--config", str(path), "--json")
            assert code == 0, err
            client = json.loads(out)["client_cert"]
            assert client["status"] == "ok" and client["sha256"] == client_sha
            assert client["not_after"] == c.client_cert.not_valid_after_utc.isoformat()

            code, out, err = await cli("plan", "expe-c1", "--config", str(path))
            assert code == 0, err
            assert f"  client      {client_sha[:16]}" in out

            code, out, err = await cli("plan", "expe-e1", "--config", str(path), "--json")
            assert code == 0, err
            assert json.loads(out)["client_cert"]["status"] == "not_applicable"
    finally:
        est.stop()


async def test_plan_and_renew_the_x15_5_client_certificate(tmp_path):
    """`plan --kind client` shows the client certificate's renewal; `renew --kind client`
    renews it without touching the server certificate; `status` names the kind."""
    est = ESTSimulator().start()
    try:
        async with Lab(
            tmp_path / "lab", version="X15.5", restart_seconds=0.3, cert_days=300,
            client_cert_days=5,
        ) as lab:  # fmt: skip
            path = lab.write_config(tmp_path / "certd.toml")
            renewal = 'ca = "lab-est", client_ca = "lab-est", key_length = 2048'
            text = add_renewal(path.read_text(), "expe-c1", renewal)
            path.write_text(text + est_ca_section(est, tmp_path))
            c = lab.expressway_c
            served, client_before = c.served_cert, c.client_cert

            code, out, err = await cli("plan", "expe-c1", "--config", str(path), "--json")
            assert code == 0, out + err
            assert json.loads(out)["required_eku"] == ["TLS Web Server Authentication"]
            code, out, err = await cli(
                "plan", "expe-c1", "--config", str(path), "--json", "--kind", "client"
            )
            assert code == 0, out + err
            plan = json.loads(out)
            assert plan["kind"] == "client"
            assert plan["required_eku"] == ["TLS Web Client Authentication"]
            assert plan["current"]["sha256"] == client_before.fingerprint(hashes.SHA256()).hex()

            # the server certificate (300 days) is not due; the client one (5 days) is
            code, out, err = await cli("renew", "expe-c1", "--config", str(path))
            assert code == 0 and "not due" in out, out + err
            code, out, err = await cli(
                "renew", "expe-c1", "--config", str(path), "--kind", "client"
            )
            assert code == 0, out + err
            for stage in STAGES:
                assert f"expe-c1    {stage:<10} ok" in out, stage
            assert "client certificate installed" in out
            assert c.client_cert != client_before and c.served_cert == served
            assert c.client_uploads == 1 and c.uploads == 0

            code, out, err = await cli("status", "expe-c1", "--config", str(path))
            assert code == 0 and "(client certificate) done at verify" in out, out + err
            code, out, err = await cli(
                "renew", "expe-c1", "--config", str(path), "--kind", "client"
            )
            assert code == 0 and "client certificate not due" in out, out + err
            assert est.submissions == 1
    finally:
        est.stop()


async def test_a_box_without_client_store_resources_blocks_the_client_renewal(tmp_path):
    """The lab box lists only the client certificate's read in /api/raml: `renew --kind
    client` blocks at preflight naming what is missing and the manual way; the box is left
    alone (no CSR, no upload, no restart)."""
    est = ESTSimulator().start()
    try:
        async with Lab(
            tmp_path / "lab", version="X15.5", restart_seconds=0.3, client_cert_days=5
        ) as lab:
            c = lab.expressway_c
            c.client_renew_api = False  # /api/raml stops listing the client CSR and upload
            path = lab.write_config(tmp_path / "certd.toml")
            text = add_renewal(path.read_text(), "expe-c1", 'ca = "lab-est"')
            path.write_text(text + est_ca_section(est, tmp_path))
            code, out, err = await cli(
                "renew", "expe-c1", "--config", str(path), "--now", "--kind", "client"
            )
            assert code == 1, out + err
            assert "expe-c1    snapshot   ok" in out
            blocked = next(line for line in out.splitlines() if "preflight  BLOCKED" in line)
            assert "lists no resource to generate client CSR, upload client certificate" in blocked
            assert "renew the client certificate in the web UI" in blocked
            assert (c.csr_generated, c.client_uploads, c.restart_count) == (0, 0, 0)
            assert est.submissions == 0
    finally:
        est.stop()
