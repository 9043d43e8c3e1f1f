"""One home for certificate facts as JSON: every view (API, scan, check-cert, device) carries
`monitor.facts.facts_json` unchanged and adds only its own keys."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from expressway_certd.cmd_check import decoded_json
from expressway_certd.cmd_device import cert_json
from expressway_certd.cmd_scan import observation_json
from expressway_certd.http import endpoint_json
from expressway_certd.monitor.config import Endpoint
from expressway_certd.monitor.facts import facts_from_x509, facts_json
from expressway_certd.monitor.probe import Observation
from expressway_certd.monitor.watch import EndpointState
from expressway_certd.renewers.decode import Decoded

NOW = datetime(2026, 6, 1, tzinfo=UTC)
ENDPOINT = Endpoint("10.0.0.1", 8443, "mra")


def test_facts_json_gives_the_same_keys_with_and_without_facts(
    make_cert: Callable[..., x509.Certificate],
) -> None:
    facts = facts_from_x509(make_cert("expe.example.com", ["expe.example.com"]))
    full, empty = facts_json(facts), facts_json(None)
    assert list(full) == list(empty)
    assert full["sans"] == ["DNS:expe.example.com"] and full["key"] == "EC 256"
    assert full["not_after"] == facts.not_after.isoformat()
    assert {k: v for k, v in empty.items() if v is not None} == {
        "sans": [],
        "key_usage": [],
        "eku": [],
    }


def test_every_view_carries_the_shared_facts(make_cert: Callable[..., x509.Certificate]) -> None:
    cert = make_cert("expe.example.com", ["expe.example.com"])
    facts = facts_from_x509(cert)
    shared = facts_json(facts)
    der = cert.public_bytes(serialization.Encoding.DER)
    state = EndpointState(
        target="expe", endpoint=ENDPOINT, observed_at=NOW, ok=True, error_class=None,
        error=None, duration=0.01, tls_version="TLSv1.3", ok_observed_at=NOW, facts=facts,
        chain=(der,), chain_verified=True, last_change_at=NOW,
    )  # fmt: skip
    observation = Observation("expe", ENDPOINT, NOW, True, chain_der=(der,), facts=facts)
    views = {
        "api": endpoint_json(state)["cert"],
        "scan": observation_json(observation, NOW),
        "check-cert": decoded_json(Decoded("certificate", (cert,)), NOW)["certificates"][0],
        "device": cert_json(cert),
    }
    for name, view in views.items():
        assert {k: view[k] for k in shared if k in view} == shared, name
        assert set(shared) <= set(view), name


def test_a_failed_probe_in_scan_has_the_shared_keys_empty() -> None:
    failed = Observation("expe", ENDPOINT, NOW, False, error_class="refused", error="refused")
    view = observation_json(failed, NOW)
    assert {k: view[k] for k in facts_json(None)} == facts_json(None)
    assert view["days_left"] is None
