"""`scan` in worker processes (issue 11 part 6): how endpoints and the concurrency are shared,
that the output assembled from the workers' pieces is the output of one process, and that a
worker that fails is reported, not lost."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from expressway_certd_lab.tls import closed_port

from expressway_certd.cmd_scan import (
    MIN_PER_WORKER,
    auto_workers,
    observation_json,
    render_text,
    scan_in_workers,
    shares,
    show,
)
from expressway_certd.monitor.config import Endpoint
from expressway_certd.monitor.errors import CertdError
from expressway_certd.monitor.facts import facts_from_x509
from expressway_certd.monitor.lint import LintFinding
from expressway_certd.monitor.probe import ChainVerdict, Observation, TrustStore

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.mark.parametrize(
    ("total", "workers", "concurrency"),
    [(1000, 2, 32), (7, 3, 2), (5, 8, 32), (1, 2, 1), (301, 3, 33)],
)
def test_shares_cover_every_endpoint_once_and_keep_the_concurrency(
    total: int, workers: int, concurrency: int
) -> None:
    plan = shares(total, workers, concurrency)
    indexes = sorted(i for share, _ in plan for i in share)
    assert indexes == list(range(total))
    assert all(share for share, _ in plan) and all(slots >= 1 for _, slots in plan)
    assert len(plan) == min(workers, total, concurrency)
    assert sum(slots for _, slots in plan) == concurrency


def test_small_scans_stay_in_one_process() -> None:
    assert auto_workers(1, 32) == 1
    assert auto_workers(2 * MIN_PER_WORKER - 1, 32) == 1
    assert auto_workers(10_000, 1) == 1
    assert 1 <= auto_workers(10_000, 32) <= 64


def _observations(make_cert: Callable[..., x509.Certificate]) -> list[Observation]:
    cert = make_cert("expé.example.com", ["expe.example.com"], not_after=NOW + timedelta(days=9))
    der = cert.public_bytes(serialization.Encoding.DER)
    facts = facts_from_x509(cert)
    ok = Observation(
        target="scan", endpoint=Endpoint("10.0.0.1", 8443, "mra"), time=NOW, ok=True,
        duration=0.012, tls_version="TLSv1.2", chain_der=(der,), chain_verified=False,
        verify_error="issuer ... is not served", facts=facts, chain_facts=(facts,),
        lint=(LintFinding("weak_key", "CN=x", "a \"quoted\"\nline"),),
    )  # fmt: skip
    failed = Observation(
        target="scan", endpoint=Endpoint("10.0.0.2", 5222, "xmpp", "xmpp"), time=NOW,
        ok=False, error_class="refused", error="connection refused",
    )  # fmt: skip
    return [ok, failed, ok]


def test_the_json_assembled_from_pieces_is_json_dumps_of_the_whole(make_cert) -> None:
    observations = _observations(make_cert)
    pieces = [show(o, NOW, as_json=True).text for o in observations]
    whole = json.dumps([observation_json(o, NOW) for o in observations], indent=2)
    assert "[\n" + ",\n".join(pieces) + "\n]" == whole


def test_the_text_pieces_and_the_counts_are_those_of_one_process(make_cert) -> None:
    observations = _observations(make_cert)
    one = io.StringIO()
    for obs in observations:
        render_text(obs, NOW, one)
    shown = [show(o, NOW, as_json=False) for o in observations]
    assert "".join(s.text for s in shown) == one.getvalue()
    assert [(s.failed, s.unverified, s.expiring) for s in shown] == [
        (False, True, True),
        (True, False, False),
        (False, True, True),
    ]


class _BrokenTrust(TrustStore):
    """A trust store whose verdict raises: what a bug in a worker looks like."""

    def verdict(self, chain: Sequence[x509.Certificate], now: datetime) -> ChainVerdict:
        raise RuntimeError("verdict exploded")


async def test_a_failing_worker_is_reported_with_what_to_do(served, trust_bundle) -> None:
    s = await served(cn="x")
    refused = await closed_port()
    endpoints = [Endpoint("127.0.0.1", s.port, "t"), Endpoint("127.0.0.1", refused, "t")] * 2
    with pytest.raises(CertdError) as exc:
        # in a thread, so that this test's loop keeps serving the listener to the workers
        await asyncio.to_thread(
            scan_in_workers, endpoints, _BrokenTrust([trust_bundle]), workers=2,
            concurrency=4, probe_timeout=5, progress=None, as_json=True,
        )  # fmt: skip
    assert "verdict exploded" in str(exc.value) and "--workers 1" in str(exc.value)
