"""Preflight and step-C validation as tables of named cases with real certificates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from expressway_certd_lab.pki import CA, SERVER_AUTH

from expressway_certd.monitor.facts import CLIENT_AUTH as CLIENT_OID
from expressway_certd.monitor.facts import SERVER_AUTH as SERVER_OID
from expressway_certd.monitor.facts import facts_from_x509
from expressway_certd.renewers.validate import (
    Issuance,
    ZoneReading,
    check_zones,
    eku_decision,
    explain_eku,
    make_plan,
    preflight,
    required_eku,
    validate,
)

NOW = datetime.now(UTC)
BOTH = (SERVER_OID, CLIENT_OID)
SERVER_ONLY = (SERVER_OID,)


@pytest.mark.parametrize(
    ("case", "version", "role", "zones", "facts", "expected", "rule"),
    [
        ("X14.3 C", "X14.3", "c", (), {}, BOTH, "before-x15.4"),
        ("X14.3 E", "X14.3", "e", (), {}, BOTH, "before-x15.4"),
        ("X15.4 C", "X15.4", "c", ("traversal-client",), {}, BOTH, "x15.4-c-needs-client-auth"),
        ("X15.4 E, switch not read", "X15.4", "e", (), {}, BOTH, "x15.4-e-switch-off"),
        (
            "X15.4 E, switch Off",
            "X15.4",
            "e",
            (),
            {"server_eku_upload": False, "peer_version": "X15.4"},
            BOTH,
            "x15.4-e-switch-off",
        ),
        (
            "X15.4 E, switch On, C on X15.3",
            "X15.4",
            "e",
            (),
            {"server_eku_upload": True, "peer_version": "X15.3.2"},
            BOTH,
            "x15.4-e-peer-version",
        ),
        (
            "X15.4 E, switch On, C version unknown",
            "X15.4",
            "e",
            (),
            {"server_eku_upload": True},
            BOTH,
            "x15.4-e-peer-version",
        ),
        (
            "X15.4 E with B2B DNS TLS zone",
            "X15.4",
            "e",
            ("b2b-dns-tls",),
            {"server_eku_upload": True, "peer_version": "X15.4"},
            BOTH,
            "x15.4-e-is-tls-client",
        ),
        (
            "X15.4 E with XMPP federation",
            "X15.4",
            "e",
            ("xmpp-federation",),
            {"server_eku_upload": True, "peer_version": "X15.4.1"},
            BOTH,
            "x15.4-e-is-tls-client",
        ),
        (
            "X15.4 E with MRA onboarding",
            "X15.4",
            "e",
            ("mra-onboarding",),
            {"server_eku_upload": True, "peer_version": "X15.4"},
            BOTH,
            "x15.4-e-is-tls-client",
        ),
        (
            "X15.4 E with a secure zone to Unified CM",
            "X15.4",
            "e",
            ("unified-cm",),
            {"server_eku_upload": True, "peer_version": "X15.4"},
            BOTH,
            "x15.4-e-is-tls-client",
        ),
        (
            "X15.4 E, every condition met",
            "X15.4",
            "e",
            (),
            {"server_eku_upload": True, "peer_version": "X15.4.2"},
            SERVER_ONLY,
            "x15.4-e-server-only-allowed",
        ),
        (
            "X15.5 C server certificate",
            "X15.5",
            "c",
            ("traversal-client", "unified-cm"),
            {},
            SERVER_ONLY,
            "x15.5-server-certificate",
        ),
        (
            "X15.5 C client certificate",
            "X15.5",
            "c",
            ("traversal-client",),
            {"cert_kind": "client"},
            (CLIENT_OID,),
            "x15.5-client-certificate",
        ),
        ("unknown version", None, None, (), {}, BOTH, "version-unknown"),
    ],
)
def test_eku_decision(case, version, role, zones, facts, expected, rule):
    decision = eku_decision(version, role, zones, **facts)
    assert (decision.required, decision.rule) == (expected, rule), case
    assert required_eku(version, role, zones, **facts) == expected


def test_preflight_names_the_switch_when_it_is_off(lab_issuing):
    plan = make_plan(
        "expe1",
        current_facts(lab_issuing, ["e.example.com"], cn="e.example.com"),
        role="e",
        version="X15.4",
        server_eku_upload=False,
        peer_version="X15.4",
    )
    (problem,) = preflight(plan, "public-acme", frozenset(SERVER_ONLY))
    assert problem.check == "ca-cannot-deliver-eku"
    assert "EnableServerEkuUpload" in problem.message and "Off" in problem.message
    assert "x15.4-e-switch-off" in problem.message
    assert "x15.4-e-switch-off" in explain_eku(plan)


def test_preflight_passes_server_only_ca_when_cisco_allows_it(lab_issuing):
    plan = make_plan(
        "expe1",
        current_facts(lab_issuing, ["e.example.com"], cn="e.example.com"),
        role="e",
        version="X15.4",
        server_eku_upload=True,
        peer_version="X15.4",
    )
    assert preflight(plan, "public-acme", frozenset(SERVER_ONLY)) == []


@pytest.mark.parametrize(
    ("acme", "check"),
    [(False, None), (True, "acme-on-box"), (None, "acme-on-box-unknown")],
)
def test_preflight_blocks_on_the_box_own_acme(lab_issuing, acme, check):
    plan = make_plan(
        "expe1",
        current_facts(lab_issuing, ["e.example.com"], cn="e.example.com"),
        role="e",
        version="X15.5",
    )
    found = [p.check for p in preflight(plan, "corp-adcs", None, acme_scheduler=acme)]
    assert found == ([check] if check else [])


@pytest.mark.parametrize(
    ("case", "zones", "expected", "checks"),
    [
        ("zero zones read", [], (), ["no-zones-read"]),
        ("all active", [ZoneReading("UCTraversal", "Active")], ("UCTraversal",), []),
        (
            "one failed",
            [ZoneReading("UCTraversal", "Failed", "TLS negotiation failure")],
            (),
            ["zone-not-active"],
        ),
        (
            "a zone seen before is gone",
            [ZoneReading("UCTraversal", "Active")],
            ("UCTraversal", "CUCMNeighbor"),
            ["zone-missing"],
        ),
    ],
)
def test_check_zones(case, zones, expected, checks):
    assert [p.check for p in check_zones("expe-c1", zones, expected)] == checks, case


def current_facts(lab_issuing, sans, cn="expc1.example.com"):
    cert, _ = lab_issuing.issue(cn, sans, key_kind="ec", key_size=256)
    return facts_from_x509(cert)


def test_plan_copies_every_san_and_adds_cluster(lab_issuing):
    facts = current_facts(lab_issuing, ["expc1.example.com", "Collab.Example.com"])
    plan = make_plan("expc1", facts, role="c", version="X14.3", cluster_fqdn="expc.example.com",
                     extra_sans=["new.example.com"])  # fmt: skip
    assert plan.sans == (
        "expc1.example.com",
        "collab.example.com",
        "new.example.com",
        "expc.example.com",
    )
    assert plan.required_eku == BOTH


PREFLIGHT = [
    ("fine", ["a.example.com"], None, frozenset(BOTH), []),
    ("unknown CA EKU passes preflight", ["a.example.com"], None, None, []),
    ("wildcard refused", ["a.example.com", "*.example.com"], None, None, ["wildcard-san"]),
    ("serverAuth-only CA refused on X14.3 C", ["a.example.com"], None, frozenset(SERVER_ONLY),
     ["ca-cannot-deliver-eku"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("sans", "cluster", "ca_ekus", "problems"),
    [c[1:] for c in PREFLIGHT],
    ids=[c[0] for c in PREFLIGHT],
)
def test_preflight(lab_issuing, sans, cluster, ca_ekus, problems):
    plan = make_plan("expc1", current_facts(lab_issuing, sans, cn=sans[0]), role="c",
                     version="X14.3", cluster_fqdn=cluster)  # fmt: skip
    found = preflight(plan, "corp-adcs", ca_ekus)
    assert [p.check for p in found] == problems
    for p in found:
        assert p.message.startswith("expc1: ")


def test_preflight_message_names_ca_and_fix(lab_issuing):
    plan = make_plan("expc1", current_facts(lab_issuing, ["a.example.com"], cn="a.example.com"),
                     role="c", version="X14.3")  # fmt: skip
    (problem,) = preflight(plan, "corp-adcs", frozenset(SERVER_ONLY))
    assert "CA 'corp-adcs'" in problem.message
    assert "TLS Web Client Authentication" in problem.message
    assert "X14.3 Expressway-C" in problem.message and "template" in problem.message


def make_csr(names):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    return csr


ROOT = CA.create("Validate Root")
ISSUING = CA.create("Validate Issuing", parent=ROOT)
ROGUE = CA.create("Rogue Root")


def issue(csr, names, *, eku=None, ca=ISSUING, days=365, not_before=None, key_of=None):
    public_key = (key_of or csr).public_key()
    leaf, _ = ca.issue(names[0], names, public_key=public_key, eku=eku, days=days,
                       not_before=not_before)  # fmt: skip
    return leaf


NAMES = ["expc1.example.com", "expc.example.com"]

VALIDATE = [
    ("good", {}, []),
    ("serverAuth only on X14.3 C", {"eku": [SERVER_AUTH]}, ["eku-missing"]),
    ("missing SAN", {"names": ["expc1.example.com"]}, ["san-mismatch"]),
    ("extra SAN", {"names": [*NAMES, "evil.example.com"]}, ["san-mismatch"]),
    ("foreign key", {"foreign_key": True}, ["key-mismatch"]),
    ("expires tomorrow", {"days": 1}, ["short-validity"]),
    ("no EKU extension", {"eku": []}, ["eku-absent"]),
    ("ten-year lifetime", {"days": 3650}, ["long-validity"]),
    (
        "valid only next week",
        {"not_before": NOW + timedelta(days=7)},
        ["not-yet-valid", "chain-invalid"],
    ),
    ("chain from another CA", {"chain": (ROGUE.cert,)}, ["chain-invalid"]),
    ("no root in chain", {"chain": (ISSUING.cert,)}, ["chain-incomplete"]),
]


@pytest.mark.parametrize(
    ("case", "problems"), [c[1:] for c in VALIDATE], ids=[c[0] for c in VALIDATE]
)
def test_validate(lab_issuing, case, problems):
    csr = make_csr(NAMES)
    plan = make_plan("expc1", current_facts(lab_issuing, NAMES, cn=NAMES[0]), role="c",
                     version="X14.3")  # fmt: skip
    names = case.get("names", NAMES)
    key_of = make_csr(NAMES) if case.get("foreign_key") else None
    leaf = issue(csr, names, eku=case.get("eku"), days=case.get("days", 365),
                 not_before=case.get("not_before"), key_of=key_of)  # fmt: skip
    chain = case.get("chain", (ISSUING.cert, ROOT.cert))
    found = validate(plan, Issuance(leaf, chain, csr, "corp-adcs"), NOW)
    assert [p.check for p in found] == problems, [p.message for p in found]


def test_serveronly_accepted_where_the_version_allows(lab_issuing):
    csr = make_csr(NAMES)
    plan = make_plan("expe1", current_facts(lab_issuing, NAMES, cn=NAMES[0]), role="e",
                     version="X15.4", server_eku_upload=True, peer_version="X15.4")  # fmt: skip
    leaf = issue(csr, NAMES, eku=[SERVER_AUTH])
    assert validate(plan, Issuance(leaf, (ISSUING.cert, ROOT.cert), csr, "le"), NOW) == []


def test_eku_and_lifetime_policy_can_be_relaxed_on_purpose(lab_issuing):
    csr = make_csr(NAMES)
    plan = make_plan("expc1", current_facts(lab_issuing, NAMES, cn=NAMES[0]), role="c",
                     version="X14.3", max_lifetime_days=3660, require_eku=False)  # fmt: skip
    for leaf in (issue(csr, NAMES, eku=[]), issue(csr, NAMES, days=3650)):
        assert validate(plan, Issuance(leaf, (ISSUING.cert, ROOT.cert), csr, "ca"), NOW) == []
