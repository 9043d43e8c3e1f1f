"""`expressway-certd scan` as an operator runs it, against loopback endpoints."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from expressway_certd_lab.pki import CA, write_key_and_chain
from expressway_certd_lab.tls import LabListener, closed_port, server_context

from tests.chain_corpus import KU_NO_CERTSIGN, KU_NONE, Spec, leaf_spec, make
from tests.helpers import need_binary

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


def _untimed(output: str) -> str:
    """The output without what differs from one run to the next (timings, days left)."""
    output = re.sub(r'"(handshake_ms|days_left)": [-0-9.]+', r'"\1": N', output)
    return re.sub(r"\d+ ms$|\(-?[0-9.]+ days left\)", "N", output, flags=re.MULTILINE)


async def test_scan_in_worker_processes_prints_what_one_process_prints(served, trust_bundle):
    """--workers N (issue 11 part 6): the same output, in the same order, the same exit."""
    good = [await served(cn=f"e{i}.example.com", sans=[f"e{i}.example.com"]) for i in range(4)]
    rogue = await served(cn="rogue.example.com", ca=CA.create("Rogue CA"))
    xmpp = await served("xmpp", cn="x.example.com")
    refused = await closed_port()
    endpoints = [
        *(f"127.0.0.1:{s.port}" for s in good[:2]), f"127.0.0.1:{rogue.port}",
        f"127.0.0.1:{refused}", *(f"127.0.0.1:{s.port}" for s in good[2:]),
    ]  # fmt: skip
    for extra in (["--json"], []):
        runs = [
            await run_cli(
                "scan", *endpoints, "--ca-file", str(trust_bundle), "--workers", workers,
                "--timeout", "5", *extra,
            )
            for workers in ("1", "2", "3")
        ]  # fmt: skip
        one = runs[0]
        assert one[0] == 1 and "refused" in one[1]
        for code, out, err in runs[1:]:
            assert (code, _untimed(out), err) == (one[0], _untimed(one[1]), one[2])
    code, out, _ = await run_cli(
        "scan", f"127.0.0.1:{xmpp.port}", f"127.0.0.1:{good[0].port}", "--starttls", "xmpp",
        "--workers", "2", "--json", "--ca-file", str(trust_bundle),
    )  # fmt: skip
    assert [d["ok"] for d in json.loads(out)] == [True, False] and code == 1


async def test_an_interrupted_scan_in_workers_exits_and_leaves_no_worker(served):
    """Ctrl-C reaches the whole process group: the scan exits 130, its workers with it."""
    hanging = [await served("hang") for _ in range(4)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "expressway_certd.cli", "scan", "--workers", "2", "--timeout",
        "60", *(f"127.0.0.1:{s.port}" for s in hanging),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    group = proc.pid  # its own session: the process group of the scan and its workers
    for _ in range(100):  # until the workers are forked (the group has more than one process)
        await asyncio.sleep(0.1)
        members = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _pgid(p) == group]
        if len(members) > 2:
            break
    os.killpg(group, signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130, err.decode()
    await asyncio.sleep(0.5)
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _pgid(p) == group]


def _pgid(proc_dir: Path) -> int | None:
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


async def test_scan_bad_arguments():
    code, _, err = await run_cli("scan", "host:notaport")
    assert code == 2 and "not HOST[:PORT]" in err
    code, _, err = await run_cli("scan", "h:443", "--ca-file", "/nonexistent.pem")
    assert code == 2 and "/nonexistent.pem does not exist" in err
    code, _, err = await run_cli("scan", "h:443", "--workers", "-1")
    assert code == 2 and "--workers must be 0 (one per CPU) or more" in err


async def _loopback_endpoint(tmp_path, root_spec, leaf_spec_=None) -> tuple[LabListener, Path]:
    """A loopback TLS endpoint serving leaf + intermediate under `root_spec`; the bundle path."""
    root = make(root_spec)
    issuing = make(Spec("Scan Issuing CA", key_slot=2), root)
    leaf = make(leaf_spec_ or leaf_spec(sans=["expe.example.com"]), issuing)
    cert_file, key_file = write_key_and_chain(tmp_path, "leaf", leaf.cert, leaf.key, [issuing.cert])
    listener = LabListener(context=server_context(cert_file, key_file))
    await listener.start()
    bundle = tmp_path / "root.pem"
    bundle.write_bytes(root.cert.public_bytes(serialization.Encoding.PEM))
    return listener, bundle


async def openssl_s_client_accepts(port: int, bundle: Path) -> bool:
    """The oracle: Debian's `openssl s_client -verify_return_error` with the same bundle."""
    proc = await asyncio.create_subprocess_exec(
        need_binary("openssl"), "s_client", "-connect", f"127.0.0.1:{port}",
        "-CAfile", str(bundle), "-verify_return_error", "-brief",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    accepted = proc.returncode == 0 and b"Verification: OK" in out
    assert accepted or b"verify error" in out, out.decode(errors="replace")
    return accepted


async def test_root_without_key_usage_verifies_with_a_lint_finding(tmp_path):
    listener, bundle = await _loopback_endpoint(
        tmp_path, Spec("Scan Root CA (v3_ca, no keyUsage)", ku=KU_NONE, key_slot=1)
    )
    try:
        assert await openssl_s_client_accepts(listener.port, bundle)
        code, out, _ = await run_cli(
            "scan", f"127.0.0.1:{listener.port}", "--json", "--ca-file", str(bundle)
        )
    finally:
        await listener.stop()
    (item,) = json.loads(out)
    assert item["chain_verified"] is True and item["error"] is None
    assert code == 0
    (finding,) = item["lint"]
    assert finding["finding"] == "ca_without_key_usage"
    assert finding["subject"] == "CN=Scan Root CA (v3_ca\\, no keyUsage)"


async def test_root_lacking_keycertsign_fails_like_openssl(tmp_path):
    listener, bundle = await _loopback_endpoint(
        tmp_path, Spec("Scan Root CA", ku=KU_NO_CERTSIGN, key_slot=1)
    )
    try:
        assert not await openssl_s_client_accepts(listener.port, bundle)
        code, out, _ = await run_cli(
            "scan", f"127.0.0.1:{listener.port}", "--json", "--ca-file", str(bundle)
        )
    finally:
        await listener.stop()
    (item,) = json.loads(out)
    assert item["chain_verified"] is False and "invalid CA certificate" in item["error"]
    assert code == 1


HOSTILE_CN = "evil\x1b[2J\x1b]0;pwned\x07\x00\u202etxt.exe\x9b31m"
HOSTILE_DNS = "a\x1b[31m.example.com"
UNSAFE = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)] if chr(c) != "\n"} | {
    "\u202e", "\u2066",
}  # fmt: skip


async def test_hostile_certificate_cannot_drive_the_terminal(tmp_path):
    root = make(Spec("Scan Root CA", key_slot=1))
    leaf = make(leaf_spec(cn=HOSTILE_CN, sans=[HOSTILE_DNS, "expe.example.com"]), root)
    cert_file, key_file = write_key_and_chain(tmp_path, "evil", leaf.cert, leaf.key, [])
    listener = await LabListener(context=server_context(cert_file, key_file)).start()
    try:
        _code, out, err = await run_cli("scan", f"127.0.0.1:{listener.port}", "--progress")
        _, json_out, _ = await run_cli("scan", f"127.0.0.1:{listener.port}", "--json")
    finally:
        await listener.stop()
    assert "Subject" in out and "evil" in out
    assert not UNSAFE & set(out), [c for c in out if c in UNSAFE]
    assert "\\x1b[2J" in out and "\\u202e" in out and "\\x9b" in out
    assert "DNS:a\\x1b[31m.example.com" in out
    # --progress output is ours (\r and the erase-line sequence), nothing from the certificate
    assert "pwned" not in err
    # JSON keeps the exact values (escaped by the JSON encoder)
    (item,) = json.loads(json_out)
    assert item["subject"].startswith("CN=evil\x1b[2J")
    assert f"DNS:{HOSTILE_DNS}" in item["sans"]
