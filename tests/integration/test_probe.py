"""The prober against real loopback listeners: success, every error class, hostile endpoints."""

from __future__ import annotations

import asyncio
import ssl
import time
import warnings
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from expressway_certd_lab.pki import CA, write_key_and_chain
from expressway_certd_lab.tls import LabListener, closed_port, server_context

from expressway_certd.monitor import lint
from expressway_certd.monitor.config import Endpoint
from expressway_certd.monitor.probe import ErrorClass, Prober, TrustStore
from tests.chain_corpus import Spec, leaf_spec, make


def ep(port: int, starttls: str | None = None, host: str = "127.0.0.1") -> Endpoint:
    return Endpoint(host, port, "test", starttls, sni="expe.example.com")


async def test_direct_tls_captures_chain_and_verifies(served, trust_bundle, lab_issuing):
    s = await served(cn="expe.example.com", sans=["expe.example.com", "collab.example.com"])
    obs = await Prober(TrustStore([trust_bundle])).probe("expe", ep(s.port))
    assert obs.ok and obs.error_class is None
    assert obs.tls_version in ("TLSv1.2", "TLSv1.3")
    assert obs.facts is not None and obs.facts.dns_names == (
        "expe.example.com",
        "collab.example.com",
    )
    # leaf + issuing CA, as served; verified against the root in the bundle, one handshake
    assert len(obs.chain_der) == 2
    assert obs.chain_facts[1].subject == lab_issuing.cert.subject.rfc4514_string()
    assert obs.chain_verified is True and obs.verify_error is None
    assert 0 < obs.duration < 5
    assert "BEGIN CERTIFICATE" in obs.chain_pem()


async def test_xmpp_starttls(served, trust_bundle):
    s = await served("xmpp", cn="expe.example.com", sans=["expe.example.com"])
    obs = await Prober(TrustStore([trust_bundle])).probe("expe", ep(s.port, "xmpp"))
    assert obs.ok, obs.error
    assert obs.facts is not None and obs.facts.common_name == "expe.example.com"


async def test_starttls_against_a_direct_tls_port_fails_clearly(served, trust_bundle):
    s = await served(cn="x")
    obs = await Prober(TrustStore([trust_bundle]), timeout=2).probe("t", ep(s.port, "xmpp"))
    assert not obs.ok and obs.error_class == ErrorClass.STARTTLS


async def test_chain_from_another_ca_is_not_verified(served, trust_bundle):
    s = await served(cn="x", ca=CA.create("Rogue CA"))
    obs = await Prober(TrustStore([trust_bundle])).probe("t", ep(s.port))
    assert obs.ok and obs.chain_verified is False
    assert obs.verify_error


async def test_expired_certificate_is_not_verified(served, trust_bundle):
    s = await served(cn="x", not_after=datetime.now(UTC) - timedelta(hours=1))
    obs = await Prober(TrustStore([trust_bundle])).probe("t", ep(s.port))
    assert obs.ok and obs.chain_verified is False
    assert obs.facts is not None and obs.facts.days_left(datetime.now(UTC)) < 0


async def test_without_trust_anchors_nothing_verifies(served):
    s = await served(cn="x")
    obs = await Prober(TrustStore([])).probe("t", ep(s.port))
    assert obs.ok and obs.chain_verified is False
    assert "no trust anchors" in (obs.verify_error or "")


@pytest.mark.parametrize(
    ("mode", "error_class"),
    [
        ("plain", ErrorClass.NOT_TLS),
        ("hang", ErrorClass.TIMEOUT),
        ("trickle", ErrorClass.TIMEOUT),
        ("reset", ErrorClass.NETWORK),
    ],
)
async def test_error_classes(served, trust_bundle, mode, error_class):
    s = await served(mode)
    s.listener.trickle_interval = 0.05
    obs = await Prober(TrustStore([trust_bundle]), timeout=1.0).probe("t", ep(s.port))
    assert not obs.ok
    assert obs.error_class == error_class, obs.error
    assert obs.facts is None and obs.chain_verified is None


async def test_refused_and_dns(trust_bundle):
    prober = Prober(TrustStore([trust_bundle]), timeout=2)
    refused = await prober.probe("t", ep(await closed_port()))
    assert refused.error_class == ErrorClass.REFUSED
    dns = await prober.probe("t", Endpoint("no-such-host.invalid", 443, "https"))
    assert dns.error_class == ErrorClass.DNS
    assert "no-such-host.invalid" in (dns.error or "")


async def test_hanging_and_trickling_endpoints_do_not_delay_the_others(served, trust_bundle):
    hang = [await served("hang") for _ in range(3)]
    trickle = [await served("trickle") for _ in range(3)]
    good = [await served(cn=f"good{i}") for i in range(4)]
    for t in trickle:
        t.listener.trickle_interval = 0.05
    prober = Prober(TrustStore([trust_bundle]), concurrency=16, timeout=3.0)
    finished: dict[int, float] = {}
    start = time.monotonic()

    def done(obs):
        finished[obs.endpoint.port] = time.monotonic() - start

    items = [("t", ep(s.port)) for s in [*hang, *trickle, *good]]
    results = await prober.probe_many(items, on_done=done)
    elapsed = time.monotonic() - start
    assert all(r.ok for r in results[-4:])
    assert all(r.error_class == ErrorClass.TIMEOUT for r in results[:6])
    # the good ones answered long before the bad ones hit their deadline
    assert max(finished[s.port] for s in good) < 1.5
    # every bad one was cut off at the hard deadline, not later
    assert elapsed < 3.0 + 1.0


async def test_concurrency_bound_is_global(served, trust_bundle):
    hang = [await served("hang") for _ in range(4)]
    prober = Prober(TrustStore([trust_bundle]), concurrency=2, timeout=0.5)
    start = time.monotonic()
    await asyncio.gather(*(prober.probe("t", ep(s.port)) for s in hang))
    # 4 hanging probes, 2 slots, 0.5 s each: two rounds
    assert time.monotonic() - start >= 0.95


async def test_served_cert_change_is_seen_on_next_probe(served, trust_bundle):
    s = await served(cn="old.example.com")
    prober = Prober(TrustStore([trust_bundle]))
    first = await prober.probe("t", ep(s.port))
    s.serve(cn="new.example.com")
    second = await prober.probe("t", ep(s.port))
    assert first.facts and second.facts
    assert first.facts.common_name == "old.example.com"
    assert second.facts.common_name == "new.example.com"


async def test_an_unchanged_chain_is_verified_again_once_it_has_expired(served, trust_bundle):
    """The prober's per-chain cache keeps a verdict only while it holds (issue 11 part 6)."""
    now = datetime.now(UTC).replace(microsecond=0)
    s = await served(cn="x", not_after=now + timedelta(hours=1))
    times = iter([now, now + timedelta(hours=2)])
    prober = Prober(TrustStore([trust_bundle]), clock=lambda: next(times))
    first = await prober.probe("t", ep(s.port))
    second = await prober.probe("t", ep(s.port))  # same chain, well within the hourly recheck
    assert first.chain_verified is True
    assert second.chain_verified is False and "expired" in (second.verify_error or "")


async def test_a_cached_verdict_is_not_given_for_another_trust_store(served, lab_root):
    """Two stores of different anchors may share a description ("given anchors")."""
    s = await served(cn="x")
    mine, other = (
        TrustStore(certificates=[lab_root.cert]),
        TrustStore(certificates=[CA.create("Another Root").cert]),
    )
    assert mine.description == other.description
    prober = Prober(mine)
    assert (await prober.probe("t", ep(s.port))).chain_verified is True
    assert (await prober.probe("t", ep(s.port), trust=other)).chain_verified is False


# ---- what is missing, and advisories (issue 13, finding 7) ---------------------------------


async def test_missing_issuer_is_named(served, trust_bundle):
    s = await served(cn="x", ca=CA.create("Rogue CA"))
    obs = await Prober(TrustStore([trust_bundle])).probe("t", ep(s.port))
    assert obs.chain_verified is False
    assert obs.verify_error is not None
    assert obs.verify_error.startswith("issuer CN=Rogue CA,O=expressway-certd lab of CN=x,")
    assert "is not served and not in the trust bundle: the server sends no intermediate" in (
        obs.verify_error
    )
    assert "candidates exhausted" not in obs.verify_error


async def _listener(tmp_path, leaf_node, chain=(), max_version=None) -> LabListener:
    cert_file, key_file = write_key_and_chain(
        tmp_path, f"l{id(leaf_node)}", leaf_node.cert, leaf_node.key, [c.cert for c in chain]
    )
    ctx = server_context(cert_file, key_file)
    if max_version is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # TLS 1.0/1.1 need security level 0
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = max_version
    listener = LabListener(context=ctx)
    return await listener.start()


async def test_self_signed_certificate_is_named(tmp_path, trust_bundle):
    listener = await _listener(tmp_path, make(leaf_spec(cn="box.example.com", ca=False)))
    try:
        obs = await Prober(TrustStore([trust_bundle])).probe("t", ep(listener.port))
    finally:
        await listener.stop()
    assert obs.chain_verified is False
    assert (
        obs.verify_error == "self-signed certificate CN=box.example.com is not in the trust bundle"
    )


@pytest.mark.parametrize(
    ("version", "name"), [(ssl.TLSVersion.TLSv1, "TLSv1"), (ssl.TLSVersion.TLSv1_1, "TLSv1.1")]
)
async def test_legacy_tls_version_is_an_advisory(tmp_path, version, name):
    root = make(Spec("Legacy Root", key_slot=1))
    leaf = make(leaf_spec(), root)
    bundle = tmp_path / "legacy-root.pem"
    bundle.write_bytes(root.cert.public_bytes(serialization.Encoding.PEM))
    listener = await _listener(tmp_path, leaf, max_version=version)
    try:
        obs = await Prober(TrustStore([bundle])).probe("t", ep(listener.port))
    finally:
        await listener.stop()
    assert obs.ok and obs.tls_version == name
    assert obs.chain_verified is True  # an advisory, not a chain failure
    assert [f.finding for f in obs.lint] == [lint.LEGACY_TLS]
    assert name in obs.lint[0].detail


async def test_modern_tls_has_no_tls_advisory(served, trust_bundle):
    s = await served(cn="expe.example.com", sans=["expe.example.com"])
    obs = await Prober(TrustStore([trust_bundle])).probe("t", ep(s.port))
    assert obs.tls_version in ("TLSv1.2", "TLSv1.3")
    assert lint.LEGACY_TLS not in {f.finding for f in obs.lint}
