"""validate's chain check gives the probe's verdict (OpenSSL's, which tests/integration/
test_chain_parity.py compares with Debian's `openssl verify`) on every chain of the corpus:
a renewal is never refused for a chain the boxes and their peers accept, nor the reverse."""

from __future__ import annotations

import pytest

from expressway_certd.monitor.facts import facts_from_x509
from expressway_certd.monitor.probe import TrustStore
from expressway_certd.renewers.validate import check_chain, make_plan
from tests.chain_corpus import NOW, Case, corpus

CASES = corpus()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_validate_agrees_with_the_probe(case: Case) -> None:
    leaf, *served = case.served
    plan = make_plan("expe-c1", facts_from_x509(leaf), role="c", version="X15.3")
    problem = check_chain(plan, leaf, served, case.anchors, NOW)
    verdict = TrustStore(certificates=case.anchors).verdict(case.served, NOW)
    assert (problem is None) == verdict.ok, (problem, verdict.error)


def test_a_root_without_key_usage_is_accepted() -> None:
    case = next(c for c in CASES if "without keyUsage" in c.name)
    leaf, *served = case.served
    plan = make_plan("expe-c1", facts_from_x509(leaf), role="c", version="X15.3")
    assert check_chain(plan, leaf, served, case.anchors, NOW) is None
