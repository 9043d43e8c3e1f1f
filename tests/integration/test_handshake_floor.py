"""The scan benchmark's floor (tests/bench/handshake_floor.py) against real loopback listeners:
it counts a handshake only when it completed, and with `--ca-file` only when the stdlib verified
the chain against that file, so the floor with verification really verifies; and one case where
the handshake's verification and our chain verdict answer differently."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.x509.oid import ExtendedKeyUsageOID
from expressway_certd_lab.pki import CA
from expressway_certd_lab.tls import closed_port

from expressway_certd.monitor.config import Endpoint
from expressway_certd.monitor.probe import Prober, TrustStore
from tests.bench import handshake_floor


async def floor(*args: str) -> dict[str, int]:
    """Run the floor as the benchmark does (a script of this interpreter) while the listeners
    of this event loop keep serving."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, handshake_floor.__file__, *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await child.communicate()
    assert child.returncode == 0
    counts: dict[str, int] = json.loads(out)
    return counts


async def test_every_completed_handshake_counts_without_verification(served):
    good = await served(cn="good.example")
    rogue = await served(cn="rogue.example", ca=CA.create("Rogue CA"))
    closed = await closed_port()
    endpoints = [f"127.0.0.1:{p}" for p in (good.port, rogue.port, closed)]
    assert await floor(*endpoints) == {"ok": 2, "failed": 1}


async def test_with_a_ca_file_only_chains_under_it_count(served, trust_bundle: Path):
    good = await served(cn="good.example")
    rogue = await served(cn="rogue.example", ca=CA.create("Rogue CA"))
    expired = await served(cn="old.example", not_after=datetime.now(UTC) - timedelta(hours=1))
    endpoints = [f"127.0.0.1:{p}" for p in (good.port, rogue.port, expired.port, good.port)]
    assert await floor("--ca-file", str(trust_bundle), "--concurrency", "2", *endpoints) == {
        "ok": 2,
        "failed": 2,
    }


async def test_the_handshake_verifies_for_a_server_where_our_verdict_sets_no_purpose(
    served, trust_bundle: Path
):
    """docs/chain-verdict.md "Why the handshake does not give the verdict": a clientAuth-only
    leaf verifies for our verdict (no purpose, as `openssl verify`) and fails the handshake's
    verification (OpenSSL's TLS client uses the ssl_server purpose)."""
    s = await served(cn="client-only.example", eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    obs = await Prober(TrustStore([trust_bundle])).probe("t", Endpoint("127.0.0.1", s.port, "t"))
    assert obs.ok and obs.chain_verified is True
    assert await floor("--ca-file", str(trust_bundle), f"127.0.0.1:{s.port}") == {
        "ok": 0,
        "failed": 1,
    }
