"""The per-process caches behind a chain verdict (issue 11 part 6, a fast `scan`) give what the
uncached path gives: the facts of every certificate of the differential corpus (expired, not
yet valid, SHA-1, RSA-1024, unknown critical extensions...), and every verdict (ok, error, path,
lint, holds_until), whether the caches are cold or were filled by other chains, other trust
stores and other times. A verdict never outlives the certificates it looked at
(`holds_until`), so the prober's per-chain cache cannot carry it past an expiry."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from expressway_certd.monitor.facts import FACTS_CACHE_SIZE, cached_facts, facts_from_x509
from expressway_certd.monitor.probe import TrustStore, _openssl_x509
from tests.chain_corpus import DAY, NOW, Spec, corpus, leaf_spec, make

CASES = corpus()


def _clear() -> None:
    cached_facts.cache_clear()
    _openssl_x509.cache_clear()


def _fresh(cert: x509.Certificate) -> x509.Certificate:
    """Another object of the same certificate (what the next handshake would give)."""
    return x509.load_der_x509_certificate(cert.public_bytes(serialization.Encoding.DER))


def test_caches_are_bounded() -> None:
    assert cached_facts.cache_info().maxsize == FACTS_CACHE_SIZE
    assert 0 < FACTS_CACHE_SIZE <= 1024
    assert 0 < (_openssl_x509.cache_info().maxsize or 0) <= 1024


def test_cached_facts_are_the_uncached_facts_for_every_corpus_certificate() -> None:
    _clear()
    certs = {c for case in CASES for c in (*case.anchors, *case.served)}
    expired = [c for c in certs if c.not_valid_after_utc < NOW]
    assert expired, "the corpus has expired certificates"
    for cert in certs:
        first = cached_facts(cert)
        again = cached_facts(_fresh(cert))
        assert first == facts_from_x509(cert)
        assert again is first  # the second object of the same certificate hits the cache
    assert cached_facts.cache_info().hits >= len(certs)


def _verdicts(store_of: dict[str, TrustStore], when: timedelta) -> dict[str, object]:
    out = {}
    for case in CASES:
        v = store_of[case.name].verdict([_fresh(c) for c in case.served], NOW + when)
        out[case.name] = (v.ok, v.error, v.path, v.lint, v.holds_until)
    return out


@pytest.mark.parametrize("when", [timedelta(0), 400 * DAY], ids=["now", "in 400 days"])
def test_every_corpus_verdict_is_the_same_with_cold_and_warm_caches(when: timedelta) -> None:
    stores = {case.name: TrustStore(certificates=case.anchors) for case in CASES}
    cold = {}
    for case in CASES:  # each verdict from empty caches: the uncached path
        _clear()
        v = stores[case.name].verdict(list(case.served), NOW + when)
        cold[case.name] = (v.ok, v.error, v.path, v.lint, v.holds_until)
    # warm: the caches filled by every chain, by other stores of the same anchors, at
    # another time (an expired certificate is in them, and valid ones that expire by then)
    _clear()
    other_time = timedelta(0) if when else 400 * DAY
    _verdicts({c.name: TrustStore(certificates=c.anchors) for c in CASES}, other_time)
    warm = _verdicts(stores, when)
    assert warm == cold
    oks = [ok for ok, *_ in cold.values()]
    assert not all(oks)  # failures are compared too
    if not when:
        assert any(oks) and any(lint for _, _, _, lint, _ in cold.values())


def test_a_warm_cache_does_not_keep_a_chain_valid_past_its_expiry() -> None:
    root = make(Spec("Expiry Root", key_slot=1))
    issuing = make(Spec("Expiry Issuing", key_slot=2), root)
    leaf = make(leaf_spec(not_after=NOW + 2 * DAY), issuing)
    store = TrustStore(certificates=[root.cert])
    before = store.verdict([leaf.cert, issuing.cert], NOW)
    after = store.verdict([_fresh(leaf.cert), _fresh(issuing.cert)], NOW + 3 * DAY)
    assert before.ok and before.holds_until == NOW + 2 * DAY
    assert not after.ok and after.error is not None and "expired" in after.error
    # and the other trust store, with the same caches warm, does not trust it at all
    rogue = make(Spec("Other Root", key_slot=3))
    assert not TrustStore(certificates=[rogue.cert]).verdict([leaf.cert, issuing.cert], NOW).ok


def test_holds_until_is_the_next_validity_edge_of_chain_path_or_anchor() -> None:
    root = make(Spec("Edge Root", key_slot=1))
    issuing = make(Spec("Edge Issuing", key_slot=2), root)
    soon = make(leaf_spec(not_before=NOW + DAY), issuing)
    store = TrustStore(certificates=[root.cert])
    early = store.verdict([soon.cert, issuing.cert], NOW)
    assert not early.ok and early.holds_until == NOW + DAY  # becomes valid then
    assert store.verdict([soon.cert, issuing.cert], NOW + 2 * DAY).ok
    # an anchor outside the path that becomes valid later bounds the verdict too
    later_root = make(Spec("Later Root", key_slot=3, not_before=NOW + 5 * DAY / 2))
    good = make(leaf_spec(), issuing)
    both = TrustStore(certificates=[root.cert, later_root.cert])
    v = both.verdict([good.cert, issuing.cert], NOW + 2 * DAY)
    assert v.ok and v.holds_until == NOW + 5 * DAY / 2
