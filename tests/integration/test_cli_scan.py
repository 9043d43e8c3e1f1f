"""`expressway-certd scan` as an operator runs it, against loopback endpoints."""

from __future__ import annotations

import asyncio
import json
import sys

from lab.tls import closed_port

SCAN_KEYS = {
    "endpoint", "ok", "error", "not_after", "sha256", "sans", "eku", "aki", "ski", "issuer",
    "subject", "chain_verified",
}  # fmt: skip


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "expressway_certd.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_scan_json(served, trust_bundle, lab_issuing):
    a = await served(cn="expe.example.com", sans=["expe.example.com", "10.0.0.5"], days=40)
    x = await served("xmpp", cn="expe.example.com", sans=["expe.example.com"])
    code, out, _ = await run_cli(
        "scan", f"127.0.0.1:{a.port}", f"127.0.0.1:{x.port}", "--starttls", "xmpp",
        "--json", "--ca-file", str(trust_bundle),
    )  # fmt: skip
    data = json.loads(out)
    # --starttls applies to every endpoint given, so the direct-TLS one fails STARTTLS
    assert code == 1
    assert [d["endpoint"] for d in data] == [f"127.0.0.1:{a.port}", f"127.0.0.1:{x.port}"]
    assert data[0]["ok"] is False and data[0]["error_class"] == "starttls_failed"
    assert data[1]["ok"] is True and set(data[1]) >= SCAN_KEYS

    code, out, _ = await run_cli(
        "scan", f"127.0.0.1:{a.port}", "--json", "--ca-file", str(trust_bundle)
    )
    assert code == 0
    (item,) = json.loads(out)
    assert set(item) >= SCAN_KEYS
    assert item["ok"] and item["chain_verified"] and item["error"] is None
    assert item["sans"] == ["DNS:expe.example.com", "IP:10.0.0.5"]
    assert item["eku"] == ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]
    assert item["not_after"].endswith("+00:00")
    assert 39 < item["days_left"] <= 40
    assert len(item["sha256"]) == 64 and len(item["aki"]) == 40
    assert item["issuer"] == lab_issuing.cert.subject.rfc4514_string()


async def test_scan_text_shows_step_a_facts_and_fails_on_errors(served, trust_bundle):
    a = await served(cn="expe.example.com", sans=["expe.example.com"])
    refused = await closed_port()
    code, out, _ = await run_cli(
        "scan", f"127.0.0.1:{a.port}", f"127.0.0.1:{refused}", "--ca-file", str(trust_bundle),
        "--timeout", "2",
    )  # fmt: skip
    assert code == 1
    for label in (
        "Subject", "Subject Alternative Names", "Key Usage", "Extended Key Usage",
        "Authority Key Identifier", "Issuer", "Not after", "Chain",
    ):  # fmt: skip
        assert label in out
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in out
    assert "days left" in out and "verified (2 certificates served)" in out
    assert f"127.0.0.1:{refused}  FAILED [refused]" in out
    assert "2 endpoints: 1 answered, 1 failed" in out


async def test_scan_untrusted_chain_exits_nonzero(served):
    a = await served(cn="expe.example.com")
    code, out, _ = await run_cli("scan", f"127.0.0.1:{a.port}", "--json")
    (item,) = json.loads(out)
    assert item["ok"] and item["chain_verified"] is False and item["error"]
    assert code == 1


async def test_scan_progress_for_many_endpoints(served, trust_bundle):
    servers = [await served(cn=f"e{i}.example.com") for i in range(5)]
    code, _, err = await run_cli(
        "scan", *(f"127.0.0.1:{s.port}" for s in servers), "--ca-file", str(trust_bundle),
        "--progress", "--json",
    )  # fmt: skip
    assert code == 0
    assert "[5/5]" in err and "[1/5]" in err


async def test_scan_bad_arguments():
    code, _, err = await run_cli("scan", "host:notaport")
    assert code == 2 and "not HOST[:PORT]" in err
    code, _, err = await run_cli("scan", "h:443", "--ca-file", "/nonexistent.pem")
    assert code == 2 and "/nonexistent.pem does not exist" in err
