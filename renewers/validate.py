"""Preflight and validation: pure checks of a renewal plan and of what the CA issued.

Preflight runs BEFORE a CSR is sent (required EKU vs what the CA can deliver, with the FN74362
rule that decided it; SAN rules; the box's own ACME scheduler must be off). Zone checks say
that zero zones read is not "every zone Active".
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

from expressway_certd.monitor.eku import E_TLS_CLIENT_USES, EkuDecision, decide_eku
from expressway_certd.monitor.facts import EKU_NAMES, CertFacts, facts_from_x509
from expressway_certd.monitor.probe import TrustStore

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
    cert_kind: str = "server"  # "server", or "client" (the X15.5 client certificate)
    eku_rule: str = ""  # the FN74362 rule that decided required_eku (monitor.eku.decide_eku)
    eku_reason: str = ""
    max_lifetime_days: int = 825  # [expressway.renewal] max_lifetime
    require_eku: bool = True  # [expressway.renewal] require_eku


def required_eku(
    version: str | None, role: str | None, zones: Sequence[str] = (), **facts: object
) -> tuple[str, ...]:
    """EKUs the new certificate must carry on this box (FN74362); see `eku_decision`."""
    return eku_decision(version, role, zones, **facts).required  # type: ignore[arg-type]


def eku_decision(
    version: str | None,
    role: str | None,
    zones: Sequence[str] = (),
    *,
    cert_kind: str = "server",
    server_eku_upload: bool | None = None,
    peer_version: str | None = None,
) -> EkuDecision:
    """The FN74362 decision for this box; zone kinds that make an Expressway-E a TLS client
    (`b2b-dns-tls`, `xmpp-federation`, `mra-onboarding`) come from `zones`."""
    return decide_eku(
        version,
        role,
        cert_kind=cert_kind,
        server_eku_upload=server_eku_upload,
        peer_version=peer_version,
        e_tls_client_uses=[z for z in zones if z in E_TLS_CLIENT_USES],
    )


def make_plan(
    target: str,
    current: CertFacts,
    *,
    role: str | None,
    version: str | None,
    cluster_fqdn: str | None = None,
    extra_sans: Sequence[str] = (),
    zones: Sequence[str] = (),
    cert_kind: str = "server",
    server_eku_upload: bool | None = None,
    peer_version: str | None = None,
    max_lifetime_days: int = 825,
    require_eku: bool = True,
) -> Plan:
    """Cisco's step B: every DNS SAN of the current certificate, plus configured additions."""
    names: list[str] = []
    for name in [*current.dns_names, *extra_sans, *([cluster_fqdn] if cluster_fqdn else [])]:
        lowered = name.lower().rstrip(".")
        if lowered not in names:
            names.append(lowered)
    if current.common_name and current.common_name.lower() not in names:
        names.insert(0, current.common_name.lower())
    decision = eku_decision(
        version,
        role,
        zones,
        cert_kind=cert_kind,
        server_eku_upload=server_eku_upload,
        peer_version=peer_version,
    )
    return Plan(
        target=target,
        role=role,
        version=version,
        sans=tuple(names),
        required_eku=decision.required,
        cluster_fqdn=cluster_fqdn.lower() if cluster_fqdn else None,
        zones=tuple(zones),
        cert_kind=cert_kind,
        eku_rule=decision.rule,
        eku_reason=decision.reason,
        max_lifetime_days=max_lifetime_days,
        require_eku=require_eku,
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
    why = f" (rule {plan.eku_rule}: {plan.eku_reason})" if plan.eku_rule else ""
    fix = (
        "use a private CA (AD CS, EST, manual) that still issues Client Authentication"
        if plan.cert_kind == "client"
        else "use a template/profile with both Server and Client Authentication, or meet "
        "Cisco's conditions for a serverAuth-only certificate (X15.4 E) or upgrade to X15.5"
    )
    return Problem(
        "ca-cannot-deliver-eku",
        f"{plan.target}: CA '{ca_name}' issues certificates without {names}, which "
        f"{plan.version or 'this version'} {_role(plan.role)} {_kind(plan.cert_kind)}requires "
        f"(FN74362){why}; {fix}",
    )


def check_client_ca(plan: Plan, ca_name: str, ca_kind: str | None) -> Problem | None:
    """The X15.5 client certificate needs TLS Web Client Authentication, which public ACME
    CAs no longer issue (Chrome Root Program, FN74362): an ACME CA is refused up front."""
    if plan.cert_kind != "client" or ca_kind != "acme":
        return None
    return Problem(
        "acme-ca-for-client-certificate",
        f"{plan.target}: CA '{ca_name}' is an ACME CA; public ACME CAs no longer issue TLS Web "
        "Client Authentication, which the X15.5 client certificate needs (FN74362); set "
        "client_ca in this box's [expressway.renewal] to a private CA (kind adcs, est or "
        "manual) and run the client renewal again",
    )


def check_acme_on_box(plan: Plan, acme_scheduler: bool | None) -> Problem | None:
    """The E's own ACME scheduler (X12.5+) would overwrite what this tool installs, and the
    other way round: block while it is on, or while its state could not be read."""
    if acme_scheduler is False:
        return None
    if acme_scheduler is True:
        return Problem(
            "acme-on-box",
            f"{plan.target}: the box's own ACME scheduler is on; two renewers would overwrite "
            "each other's certificates (Cisco advises turning it off): turn off ACME on the "
            "Expressway-E (Maintenance > Security > ACME) or leave this box to it",
        )
    return Problem(
        "acme-on-box-unknown",
        f"{plan.target}: could not read whether the box's own ACME scheduler is on (its "
        "/api/raml lists no ACME resource this tool knows, or the answer did not say); check "
        "Maintenance > Security > ACME on the Expressway-E and turn it off before renewing",
    )


def explain_eku(plan: Plan) -> str:
    """One line for `plan` and the audit log: required EKUs and the rule that decided."""
    names = " + ".join(EKU_NAMES.get(e, e) for e in plan.required_eku)
    return f"{names} (rule {plan.eku_rule or '-'}: {plan.eku_reason or 'no reason recorded'})"


def preflight(
    plan: Plan,
    ca_name: str,
    ca_ekus: frozenset[str] | None,
    *,
    acme_scheduler: bool | None = False,
    ca_kind: str | None = None,
) -> list[Problem]:
    """Every problem that must stop a renewal before a CSR is generated. `acme_scheduler` is
    what `ExpresswayClient.acme_scheduler()` read (None: unknown, which blocks); `ca_kind` the
    `[ca.NAME]` kind (an ACME CA cannot renew a client certificate)."""
    checks: list[Callable[[], Problem | None]] = [
        lambda: check_not_empty(plan),
        lambda: check_no_wildcard(plan),
        lambda: check_cluster_fqdn(plan),
        lambda: check_client_ca(plan, ca_name, ca_kind),
        lambda: check_ca_delivers(plan, ca_name, ca_ekus),
        lambda: check_acme_on_box(plan, acme_scheduler),
    ]
    return [p for p in (c() for c in checks) if p is not None]


@dataclass(frozen=True)
class ZoneReading:
    """One zone as the box reported it (the fields of renewers.expressway.ZoneState)."""

    name: str
    state: str
    reason: str = ""


def check_zones(
    target: str, zones: Sequence[ZoneReading], expected: Sequence[str] = ()
) -> list[Problem]:
    """Zones after an install: none read is a problem (not "every zone Active"), so is a
    zone seen before (`expected`, from the snapshot) that is missing now, or one not Active."""
    if not zones:
        return [
            Problem(
                "no-zones-read",
                f"{target}: the box reported no zones, so none could be checked; look at "
                "Status > Zones on the box (a box that has no zones at all cannot be checked "
                "this way: check its services by hand, then end the renewal with "
                "`expressway-certd cancel ID`; the new certificate stays installed)",
            )
        ]
    problems = [
        Problem("zone-not-active", f"{target}: zone {z.name} is {z.state}: {z.reason}")
        for z in zones
        if z.state.lower() != "active"
    ]
    seen = {z.name for z in zones}
    problems += [
        Problem("zone-missing", f"{target}: zone {name} was there before and is not reported now")
        for name in expected
        if name not in seen
    ]
    return problems


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
        if not plan.require_eku:
            return None  # unrestricted (RFC 5280 4.2.1.12), accepted by configuration
        return Problem(
            "eku-absent",
            f"{plan.target}: CA '{ca_name}' returned a certificate without an Extended Key "
            "Usage extension; use a template that sets TLS Web Server (and, where FN74362 "
            "requires it, Client) Authentication, or set require_eku = false in "
            f"[expressway.renewal] of {plan.target} to accept it",
        )
    missing = [e for e in plan.required_eku if e not in facts.eku]
    if not missing:
        return None
    names = " and ".join(EKU_NAMES.get(m, m) for m in missing)
    return Problem(
        "eku-missing",
        f"{plan.target}: CA '{ca_name}' returned a certificate without {names}; "
        f"{plan.version or 'this version'} {_role(plan.role)} {_kind(plan.cert_kind)}requires "
        f"it (FN74362, rule {plan.eku_rule or '-'}); use a template with "
        + (
            "Client Authentication"
            if plan.cert_kind == "client"
            else "both Server and Client Authentication"
        ),
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
    lifetime = facts.not_after - facts.not_before
    if lifetime > timedelta(days=plan.max_lifetime_days):
        return Problem(
            "long-validity",
            f"{plan.target}: the issued certificate is valid for {lifetime.days} days, more than "
            f"max_lifetime ({plan.max_lifetime_days} days; Apple clients refuse TLS server "
            "certificates over 825 days); ask the CA for a shorter validity, or raise "
            f"max_lifetime in [expressway.renewal] of {plan.target}",
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
    # OpenSSL's verdict, as the probe gives it (monitor/probe.py): the boxes that will serve
    # this chain and the peers that verify it run OpenSSL, so an internal root made with
    # OpenSSL's default v3_ca section (no keyUsage) is accepted here as it is there.
    verdict = TrustStore(certificates=roots).verdict([leaf, *intermediates], now)
    if not verdict.ok:
        return Problem(
            "chain-invalid", f"{plan.target}: the issued chain does not build: {verdict.error}"
        )
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


def _kind(kind: str) -> str:
    return "client certificate " if kind == "client" else ""


def _role(role: str | None) -> str:
    return {"c": "Expressway-C", "e": "Expressway-E"}.get(role or "", "Expressway")
