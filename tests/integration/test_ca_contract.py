"""One contract, three CA connectors: EST and AD CS against the lab simulators over HTTPS, ACME
against real Pebble answering DNS-01 through a real BIND9."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from cryptography import x509
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from lab.pki import CA
from monitor.errors import CAError
from renewers.ca.base import CAConnector, Capabilities, Pending
from tests.integration.ca_servers import (  # noqa: F401 - fixtures
    Harness,
    bind9_server,
    harness_fixture,
    make_csr,
    pebble_server,
    until_issued,
)

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _default_structlog() -> Iterator[None]:
    """Log at every level here, whatever an earlier CLI test configured."""
    saved = structlog.get_config()
    structlog.reset_defaults()
    yield
    structlog.configure(**saved)


def sans(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_submit_issues_leaf_for_the_csr_key_with_a_chain_that_verifies(
    harness: Harness,
) -> None:
    conn = harness.connector()
    assert isinstance(conn, CAConnector)
    names = harness.names()
    csr = make_csr(*names)
    issued = await until_issued(conn, await conn.submit(csr))
    assert issued.leaf.public_key() == csr.public_key()
    assert sans(issued.leaf) == set(names)
    assert issued.chain, "the chain above the leaf is returned"
    issued.leaf.verify_directly_issued_by(issued.chain[0])
    for lower, upper in zip(issued.chain, issued.chain[1:], strict=False):
        lower.verify_directly_issued_by(upper)


async def test_pending_handle_is_json_and_a_new_instance_finishes_without_resubmitting(
    harness: Harness,
) -> None:
    harness.set_manual(True)
    first = harness.connector(wait=0)
    csr = make_csr(*harness.names())
    with capture_logs() as logs:
        result = await first.submit(csr)
    assert [(e["event"], e["ca"], e["step"]) for e in logs if e["event"].startswith("ca.")] == [
        ("ca.pending", harness.name, "submit")
    ]
    assert isinstance(result, Pending), result
    assert result.retry_at.tzinfo is not None
    handle = json.loads(json.dumps(result.handle))
    assert harness.name in json.dumps(handle)
    await first.aclose()

    harness.approve()
    second = harness.connector(wait=30)
    issued = await until_issued(second, await second.poll(handle))
    assert issued.leaf.public_key() == csr.public_key()
    assert first.request_count(harness.submit_op) == 1
    if harness.kind != "est":  # EST continues a request by resending the same CSR
        assert second.request_count(harness.submit_op) == 0
    if harness.ca_submissions() is not None:
        assert harness.ca_submissions() == 1


async def test_a_handle_from_another_ca_is_refused_with_the_ca_named(harness: Harness) -> None:
    conn = harness.connector()
    with pytest.raises(
        CAError, match=f"CA '{harness.name}': poll: the handle belongs to CA 'other'"
    ):
        await conn.poll(
            {
                "v": 1,
                "ca": "other",
                "kind": harness.kind,
                "csr": "",
                "order_url": "",
                "req_id": 1,
                "operation": "x",
            }
        )


async def test_wrong_trust_anchor_fails_naming_ca_step_and_fix(
    harness: Harness, tmp_path: Path
) -> None:
    stranger = CA.create("Someone else").write_bundle(tmp_path / "stranger.pem")
    conn = harness.connector(trust_anchor=stranger)
    before = metric(
        "expressway_ca_errors_total", ca=harness.name, kind=harness.kind, reason="tls_verify"
    )
    with pytest.raises(CAError) as info:
        await conn.submit(make_csr(*harness.names()))
    message = str(info.value)
    assert message.startswith(f"CA '{harness.name}': ")
    assert "trust_anchor" in message
    after = metric(
        "expressway_ca_errors_total", ca=harness.name, kind=harness.kind, reason="tls_verify"
    )
    assert after == before + 1


async def test_wrong_secret_is_refused_and_never_shown(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = (
        "Wr0ng-" + "x" * 30
        if harness.kind != "acme"
        else "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZw"
    )
    monkeypatch.setenv("CERTD_TEST_WRONG", wrong)
    conn = harness.connector(password_env="CERTD_TEST_WRONG")
    with capture_logs() as logs, pytest.raises(CAError) as info:
        await conn.submit(make_csr(*harness.names()))
    assert f"CA '{harness.name}'" in str(info.value)
    assert any(e["event"] == "ca.request_failed" and e["ca"] == harness.name for e in logs)
    for text in (str(info.value), repr(conn), repr(getattr(conn, "config", "")), repr(logs)):
        assert wrong not in text
        assert harness.secret not in text


async def test_request_durations_are_recorded(harness: Harness) -> None:
    conn = harness.connector()
    op = harness.submit_op
    before = metric(
        "expressway_ca_request_duration_seconds_count", ca=harness.name, kind=harness.kind, op=op
    )
    await until_issued(conn, await conn.submit(make_csr(*harness.names())))
    after = metric(
        "expressway_ca_request_duration_seconds_count", ca=harness.name, kind=harness.kind, op=op
    )
    assert after == before + 1


async def test_capabilities_and_check(harness: Harness) -> None:
    conn = harness.connector()
    caps = conn.capabilities()
    assert isinstance(caps, Capabilities)
    assert caps.kind == harness.kind
    results = await conn.check()
    assert results and all(r.ok for r in results), results
    chain = await conn.ca_chain()
    assert all(c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca for c in chain)
