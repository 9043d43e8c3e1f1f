"""check-cert's pure core: Cisco's steps C and D for a hand-obtained certificate, as a table."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from expressway_certd_lab.pki import CA, SERVER_AUTH, new_key

from expressway_certd.renewers.handcheck import (
    Situation,
    TrustHolder,
    build_path,
    check_hand_cert,
    offline_holders,
)

NOW = datetime.now(UTC)
FQDN = "expe-c1.lab.example"
SANS = [FQDN, "expressway-c.lab.example"]


@pytest.fixture(scope="module")
def pki():
    old_root = CA.create("Old Root")
    old_issuing = CA.create("Old Issuing", parent=old_root)
    new_root = CA.create("New Root")
    new_issuing = CA.create("New Issuing", parent=new_root)
    box_key = new_key("ec", 256)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, FQDN)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in SANS]), False)
        .sign(box_key, hashes.SHA256())
    )
    current, _ = old_issuing.issue(FQDN, SANS, key_kind="ec", key_size=256)
    return {
        "old_root": old_root,
        "old_issuing": old_issuing,
        "new_root": new_root,
        "new_issuing": new_issuing,
        "csr": csr,
        "current": current,
    }


def situation(pki, **changes) -> Situation:
    base = Situation(
        target="expe-c1",
        role="c",
        version="X15.3",
        current=pki["current"],
        pending_csr=pki["csr"],
        anchors=(pki["old_root"].cert,),
        known_cas=tuple(pki["old_issuing"].chain()),
        holders=(
            TrustHolder("expe-c1", "Trusted CA certificate", tuple(pki["old_issuing"].chain())),
            TrustHolder("expe-e1", "Trusted CA certificate", (pki["old_root"].cert,)),
            TrustHolder(
                "cucm1/node1",
                "callmanager-trust",
                tuple(pki["old_issuing"].chain()),
                restart="Cisco CallManager",
            ),
        ),
    )
    return replace(base, **changes)


def issue(pki, ca="old_issuing", sans=SANS, eku=None, key=None):
    public = key.public_key() if key is not None else pki["csr"].public_key()
    cert, _ = pki[ca].issue(FQDN, sans, public_key=public, eku=eku)
    return cert


def failing(result) -> dict[str, str]:
    return {r.name: r.problem.check for r in result.results if r.problem is not None}


def test_the_right_certificate_is_safe_and_needs_no_trust_uploads(pki):
    result = check_hand_cert(issue(pki), [], situation(pki), NOW)
    assert failing(result) == {}
    assert result.safe
    assert not result.issuer_changed
    assert result.uploads == ()
    assert [c.subject for c in result.path[1:]] == [c.subject for c in pki["old_issuing"].chain()]


CASES = [
    ("missing SAN", dict(sans=[FQDN]), {}, {"sans": "san-mismatch"}),
    ("serverAuth only on X15.3", dict(eku=[SERVER_AUTH]), {}, {"eku": "eku-missing"}),
    (
        "serverAuth only on X15.4 E with the switch on and the C on X15.4 is fine",
        dict(eku=[SERVER_AUTH]),
        dict(version="X15.4", role="e", server_eku_upload=True, peer_version="X15.4"),
        {},
    ),
    (
        "serverAuth only on X15.4 E with EnableServerEkuUpload off",
        dict(eku=[SERVER_AUTH]),
        dict(version="X15.4", role="e", server_eku_upload=False, peer_version="X15.4"),
        {"eku": "eku-missing"},
    ),
    (
        "serverAuth only on X15.4 E whose C is on X14.3",
        dict(eku=[SERVER_AUTH]),
        dict(version="X15.4", role="e", server_eku_upload=True, peer_version="X14.3"),
        {"eku": "eku-missing"},
    ),
    ("key of another CSR", dict(key=new_key("ec", 256)), {}, {"key-matches-csr": "key-mismatch"}),
    ("no pending CSR", {}, dict(pending_csr=None), {"key-matches-csr": "no-pending-csr"}),
    (
        "wildcard",
        dict(sans=[*SANS, "*.lab.example"]),
        {},
        {"sans": "san-mismatch", "wildcard": "wildcard-san"},
    ),
]


@pytest.mark.parametrize(
    ("name", "cert_args", "situation_changes", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_refusals(pki, name, cert_args, situation_changes, expected):
    result = check_hand_cert(issue(pki, **cert_args), [], situation(pki, **situation_changes), NOW)
    assert failing(result) == expected
    assert result.safe is (not expected)


def test_chain_missing_its_intermediate_is_refused_and_named(pki):
    leaf = issue(pki, ca="new_issuing")
    result = check_hand_cert(leaf, [pki["new_root"].cert], situation(pki), NOW)
    assert failing(result) == {"chain": "chain-incomplete"}
    message = next(r.problem.message for r in result.results if r.name == "chain")
    assert "CN=New Issuing" in message
    assert len(result.path) == 1


def test_new_ca_lists_exactly_the_missing_uploads(pki):
    leaf = issue(pki, ca="new_issuing")
    chain = pki["new_issuing"].chain()
    # expe-e1 already trusts the new root, so only the issuing CA goes there.
    sit = situation(pki)
    holders = list(sit.holders)
    holders[1] = replace(holders[1], trusted=(pki["old_root"].cert, pki["new_root"].cert))
    result = check_hand_cert(leaf, chain, replace(sit, holders=tuple(holders)), NOW)
    assert result.safe, failing(result)
    assert result.issuer_changed
    uploads = {(u.where, u.store): [c.subject for c in u.certificates] for u in result.uploads}
    new_issuing, new_root = (c.subject for c in chain)
    assert uploads == {
        ("expe-c1", "Trusted CA certificate"): [new_issuing, new_root],
        ("expe-e1", "Trusted CA certificate"): [new_issuing],
        ("cucm1/node1", "callmanager-trust"): [new_issuing, new_root],
    }
    assert [u.restart for u in result.uploads] == ["", "", "Cisco CallManager"]


def test_expired_intermediate_is_refused(pki):
    root = CA.create("Short Root")
    old = CA.create("Expired Issuing", parent=root, days=-1)
    leaf, _ = old.issue(FQDN, SANS, public_key=pki["csr"].public_key())
    result = check_hand_cert(leaf, old.chain(), situation(pki), NOW)
    assert failing(result) == {"chain": "chain-invalid"}


def test_offline_holders_follow_ciscos_step_d():
    c = offline_holders("this Expressway", "c")
    assert [(h.store, h.restart) for h in c] == [
        ("Trusted CA certificate", ""),
        ("Trusted CA certificate", ""),
        ("tomcat-trust", "Cisco CallManager, Cisco Tomcat"),
        ("callmanager-trust", "Cisco CallManager, Cisco Tomcat"),
    ]
    e = offline_holders("this Expressway", "e")
    assert [h.where for h in e] == [
        "this Expressway",
        "the Expressway-C (traversal peer, every peer of its cluster)",
    ]


def test_build_path_checks_signatures_not_only_names(pki):
    impostor = CA.create("Old Issuing")  # same subject, different key
    leaf = issue(pki)
    assert build_path(leaf, [impostor.cert]) == (leaf,)
    assert build_path(leaf, pki["old_issuing"].chain())[1:] == tuple(pki["old_issuing"].chain())
