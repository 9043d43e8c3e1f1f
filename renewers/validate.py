"""Preflight and validation: pure checks of a renewal plan and of what the CA issued.

Preflight runs BEFORE a CSR is sent (required EKU vs what the CA can deliver; SAN rules).
Validation runs on the issued certificate BEFORE anything is installed (Cisco's step C):
SAN set equals the plan, EKU and KU fit, the public key is the CSR's, validity is sane, the
chain builds, and the leaf is a leaf. Each check returns a Problem or None; tests are tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from monitor.eku import client_auth_required, parse_version
from monitor.facts import CLIENT_AUTH, SERVER_AUTH, CertFacts, facts_from_x509

EKU_NAMES = {
    SERVER_AUTH: "TLS Web Server Authentication",
    CLIENT_AUTH: "TLS Web Client Authentication",
}
CLOCK_SKEW = timedelta(minutes=10)
MIN_VALIDITY = timedelta(days=2)


@dataclass(frozen=True)
class Problem:
    check: str  # a stable name, e.g. "san-mismatch"
    message: str  # what is wrong and what to do


@dataclass(frozen=True)
class Plan:
    """What a renewal of one box must produce (from the snapshot and the config)."""

    target: str
    role: str | None
    version: str | None
    sans: tuple[str, ...]  # DNS names, lower case, in the order the CSR lists them
    required_eku: tuple[str, ...]
    cluster_fqdn: str | None = None
    zones: tuple[str, ...] = ()  # zone kinds in use: "traversal-client", "unified-cm", ...
    notes: tuple[str, ...] = field(default=())


def required_eku(
    version: str | None, role: str | None, zones: Sequence[str] = ()
) -> tuple[str, ...]:
    """EKUs the new certificate must carry on this box (FN74362).

    Before X15.5 the server certificate is also the TLS client certificate: an Expressway-C
    (traversal client towards E, SIP TLS to Unified CM) needs clientAuth; an X15.4 E serving
    MRA may be serverAuth-only; X15.5 separates client and server certificates.
    """
    needs_client = client_auth_required(version, role)
    parsed = parse_version(version)
    if (
        not needs_client
        and role == "e"
        and parsed is not None
        and parsed < (15, 5, 0)
        and any(z in ("traversal-client", "unified-cm") for z in zones)
    ):
        needs_client = True  # an E that is itself a TLS client somewhere
    return (SERVER_AUTH, CLIENT_AUTH) if needs_client else (SERVER_AUTH,)


def make_plan(
    target: str,
    current: CertFacts,
    *,
    role: str | None,
    version: str | None,
    cluster_fqdn: str | None = None,
    extra_sans: Sequence[str] = (),
    zones: Sequence[str] = (),
) -> Plan:
    """Cisco's step B: every DNS SAN of the current certificate, plus configured additions."""
    names: list[str] = []
    for name in [*current.dns_names, *extra_sans, *([cluster_fqdn] if cluster_fqdn else [])]:
        lowered = name.lower().rstrip(".")
        if lowered not in names:
            names.append(lowered)
    if current.common_name and current.common_name.lower() not in names:
        names.insert(0, current.common_name.lower())
    return Plan(
        target=target,
        role=role,
        version=version,
        sans=tuple(names),
        required_eku=required_eku(version, role, zones),
        cluster_fqdn=cluster_fqdn.lower() if cluster_fqdn else None,
        zones=tuple(zones),
    )


# --- preflight ---------------------------------------------------------------------------


def check_no_wildcard(plan: Plan) -> Problem | None:
    wild = [n for n in plan.sans if "*" in n]
    if wild:
        return Problem(
            "wildcard-san",
            f"{plan.target}: the SAN list has the wildcard {wild[0]}; Expressway does not "
            "support wildcard server certificates: list each name instead",
        )
    return None


def check_cluster_fqdn(plan: Plan) -> Problem | None:
    if plan.cluster_fqdn and plan.cluster_fqdn not in plan.sans:
        return Problem(
            "cluster-fqdn-missing",
            f"{plan.target}: cluster FQDN {plan.cluster_fqdn} is not in the SAN list; "
            "every peer certificate must carry it",
        )
    return None


def check_not_empty(plan: Plan) -> Problem | None:
    if not plan.sans:
        return Problem(
            "no-sans",
            f"{plan.target}: the current certificate has no DNS names to copy; set "
            "extra_sans for this Expressway",
        )
    return None


def check_ca_delivers(plan: Plan, ca_name: str, ca_ekus: frozenset[str] | None) -> Problem | None:
    """Refuse before submitting when the CA/profile is known not to deliver a required EKU."""
    if ca_ekus is None:
        return None  # only the issued certificate will tell; validation checks it
    missing = [e for e in plan.required_eku if e not in ca_ekus]
    if not missing:
        return None
    names = " and ".join(EKU_NAMES.get(m, m) for m in missing)
    return Problem(
        "ca-cannot-deliver-eku",
        f"{plan.target}: CA '{ca_name}' issues certificates without {names}, which "
        f"{plan.version or 'this version'} {_role(plan.role)} requires (FN74362); use a "
        "template/profile with both Server and Client Authentication, or upgrade to X15.5",
    )


def preflight(plan: Plan, ca_name: str, ca_ekus: frozenset[str] | None) -> list[Problem]:
    checks: list[Callable[[], Problem | None]] = [
        lambda: check_not_empty(plan),
        lambda: check_no_wildcard(plan),
        lambda: check_cluster_fqdn(plan),
        lambda: check_ca_delivers(plan, ca_name, ca_ekus),
    ]
    return [p for p in (c() for c in checks) if p is not None]


# --- validation of the issued certificate (step C) --------------------------------------


@dataclass(frozen=True)
class Issuance:
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # issuing CA first
    csr: x509.CertificateSigningRequest
    ca_name: str


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_sans_equal(plan: Plan, facts: CertFacts) -> Problem | None:
    got = {n.lower() for n in facts.dns_names}
    want = set(plan.sans)
    if got == want:
        return None
    missing = sorted(want - got)
    extra = sorted(got - want)
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing)}")
    if extra:
        parts.append(f"unexpected {', '.join(extra)}")
    return Problem(
        "san-mismatch",
        f"{plan.target}: the issued certificate's SANs differ from the plan ({'; '.join(parts)}); "
        "the CA may have rewritten the request: check its template/profile",
    )


def check_eku(plan: Plan, facts: CertFacts, ca_name: str) -> Problem | None:
    if not facts.eku:
        return None  # unrestricted
    missing = [e for e in plan.required_eku if e not in facts.eku]
    if not missing:
        return None
    names = " and ".join(EKU_NAMES.get(m, m) for m in missing)
    return Problem(
        "eku-missing",
        f"{plan.target}: CA '{ca_name}' returned a certificate without {names}; "
        f"{plan.version or 'this version'} {_role(plan.role)} requires it (FN74362); "
        "use a template with both Server and Client Authentication",
    )


def check_key_usage(plan: Plan, facts: CertFacts) -> Problem | None:
    if not facts.key_usage:
        return None
    if "Digital Signature" not in facts.key_usage:
        return Problem(
            "key-usage",
            f"{plan.target}: the issued certificate's Key Usage lacks Digital Signature, "
            "which TLS needs",
        )
    if facts.key_type == "RSA" and "Key Encipherment" not in facts.key_usage:
        return Problem(
            "key-usage",
            f"{plan.target}: the issued RSA certificate's Key Usage lacks Key Encipherment",
        )
    return None


def check_public_key(
    plan: Plan, leaf: x509.Certificate, csr: x509.CertificateSigningRequest
) -> Problem | None:
    if _spki(leaf.public_key()) == _spki(csr.public_key()):
        return None
    return Problem(
        "key-mismatch",
        f"{plan.target}: the issued certificate is not for the CSR pending on the box (public "
        "keys differ); installing it would fail: submit the pending CSR again",
    )


def check_validity(plan: Plan, facts: CertFacts, now: datetime) -> Problem | None:
    if facts.not_before > now + CLOCK_SKEW:
        return Problem(
            "not-yet-valid",
            f"{plan.target}: the issued certificate is valid only from {facts.not_before:%Y-%m-%d %H:%M} UTC; "
            "check the CA's clock",
        )
    if facts.not_after < now + MIN_VALIDITY:
        return Problem(
            "short-validity",
            f"{plan.target}: the issued certificate expires at {facts.not_after:%Y-%m-%d %H:%M} UTC, "
            "too soon to be worth installing",
        )
    return None


def check_leaf(plan: Plan, facts: CertFacts) -> Problem | None:
    if facts.is_ca:
        return Problem(
            "not-a-leaf",
            f"{plan.target}: the CA returned a CA certificate as the leaf; upload needs the "
            "server certificate only",
        )
    return None


def check_chain(
    plan: Plan,
    leaf: x509.Certificate,
    chain: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    now: datetime,
) -> Problem | None:
    """The chain builds from the leaf to an anchor (the chain's own self-signed root counts
    when no anchors are given: the trust stage distributes exactly that root)."""
    roots = list(anchors) or [c for c in chain if c.subject == c.issuer]
    if not roots:
        return Problem(
            "chain-incomplete",
            f"{plan.target}: the CA's chain has no root certificate and no trust anchor matches; "
            "add the CA's root certificate to [daemon] trust_bundle",
        )
    intermediates = [c for c in chain if c.subject != c.issuer]
    verifier = (
        PolicyBuilder()
        .store(Store(roots))
        .time(now)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        text = str(exc).removeprefix("validation failed: ").split(" (encountered", 1)[0]
        return Problem("chain-invalid", f"{plan.target}: the issued chain does not build: {text}")
    return None


def validate(
    plan: Plan,
    issued: Issuance,
    now: datetime,
    anchors: Sequence[x509.Certificate] = (),
) -> list[Problem]:
    """Every problem with an issued certificate; empty means it may be installed."""
    facts = facts_from_x509(issued.leaf)
    results = [
        check_leaf(plan, facts),
        check_public_key(plan, issued.leaf, issued.csr),
        check_sans_equal(plan, facts),
        check_eku(plan, facts, issued.ca_name),
        check_key_usage(plan, facts),
        check_validity(plan, facts, now),
        check_chain(plan, issued.leaf, issued.chain, anchors, now),
    ]
    return [r for r in results if r is not None]


def _role(role: str | None) -> str:
    return {"c": "Expressway-C", "e": "Expressway-E"}.get(role or "", "Expressway")
