"""Which CA certificates may go to trust stores (renewers/trust.py): only a leaf's path to a
root pinned for its CA, each signature checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from expressway_certd_lab.pki import CA, cert_pem

from expressway_certd.monitor.errors import ConfigError
from expressway_certd.renewers.ca.est_config import ESTConfig
from expressway_certd.renewers.ca.manual_config import ManualConfig
from expressway_certd.renewers.trust import Anchors, pinned_anchors, trust_path

ROOT = CA.create("Corp Root CA")
ISSUING = CA.create("Corp Issuing CA", parent=ROOT)
LOOKALIKE = CA.create("Corp Root CA")  # same name as ROOT, another key
LOOKALIKE_ISSUING = CA.create("Corp Issuing CA", parent=LOOKALIKE)
OTHER = CA.create("Unrelated CA")
LEAF, _ = ISSUING.issue("e1.example.com", ["e1.example.com"])
ROGUE_LEAF, _ = LOOKALIKE_ISSUING.issue("e1.example.com", ["e1.example.com"])
DIRECT_LEAF, _ = ROOT.issue("e1.example.com", ["e1.example.com"])

PINNED = Anchors("corp", (ROOT.cert,), ("ca.corp.trust_anchors",))


@pytest.mark.parametrize(
    ("name", "leaf", "chain", "expected"),
    [
        ("intermediate up to the pinned root", LEAF, [ISSUING.cert, ROOT.cert], [ISSUING.cert, ROOT.cert]),
        ("root missing from the chain: taken from the pin", LEAF, [ISSUING.cert], [ISSUING.cert, ROOT.cert]),
        ("extra CA in the chain is never pushed", LEAF, [OTHER.cert, ISSUING.cert], [ISSUING.cert, ROOT.cert]),
        ("leaf issued by the root itself", DIRECT_LEAF, [], [ROOT.cert]),
        ("lookalike root (same name, other key)", ROGUE_LEAF, [LOOKALIKE_ISSUING.cert, LOOKALIKE.cert], None),
        ("lookalike chain with the real root appended", ROGUE_LEAF, [LOOKALIKE_ISSUING.cert, ROOT.cert], None),
        ("intermediate missing", LEAF, [], None),
    ],
)  # fmt: skip
def test_trust_path(name, leaf, chain, expected):
    assert trust_path(leaf, chain, PINNED) == expected, name


def test_no_pinned_root_means_no_path():
    assert trust_path(LEAF, [ISSUING.cert, ROOT.cert], Anchors("corp", (), ())) is None


def test_pinned_anchors_come_from_configuration_only(tmp_path: Path):
    anchors_file = tmp_path / "anchors.pem"
    anchors_file.write_bytes(cert_pem(ROOT.cert) + cert_pem(ISSUING.cert))  # only roots count
    chain_file = tmp_path / "chain.pem"
    chain_file.write_bytes(cert_pem(ISSUING.cert) + cert_pem(OTHER.cert))
    manual = ManualConfig("portal", chain=chain_file, trust_anchors=anchors_file)
    found = pinned_anchors(manual)
    assert found.roots == (ROOT.cert, OTHER.cert)
    assert any("trust_anchors" in s for s in found.sources)
    assert pinned_anchors(ManualConfig("portal")).roots == ()
    est = ESTConfig("est", "https://est.example/.well-known/est", trust_anchor=anchors_file)
    assert pinned_anchors(est).roots == (ROOT.cert,)


def test_unreadable_anchor_file_is_a_config_error(tmp_path: Path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"ca\.portal\.trust_anchors: cannot read"):
        pinned_anchors(ManualConfig("portal", trust_anchors=bad))
