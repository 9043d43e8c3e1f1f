"""Cisco's steps C and D for a certificate someone obtained by hand: is it safe to install?

Pure: the caller gathers the `Situation` (from the box through the device clients, or from
files) and `check_hand_cert` returns every problem plus the exact trust uploads step D needs
when the issuer changed. The individual checks are those of `renewers/validate.py` (SANs,
EKU, key usage, key against the pending CSR, validity, chain), so a hand renewal is judged
exactly as an automatic one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from expressway_certd.monitor.facts import diff_facts, facts_from_x509
from expressway_certd.monitor.text import printable
from expressway_certd.renewers.trust import issued_by
from expressway_certd.renewers.validate import (
    Plan,
    Problem,
    check_chain,
    check_eku,
    check_key_usage,
    check_leaf,
    check_no_wildcard,
    check_public_key,
    check_sans_equal,
    check_validity,
    make_plan,
)

EXPRESSWAY_STORE_LABEL = "Trusted CA certificate"  # as the web UI names it (trustmap.py: its id)


@dataclass(frozen=True)
class TrustHolder:
    """One trust store that must hold a new CA before the new certificate goes live."""

    where: str  # an [[expressway]] name, or "<unified_cm>/<node>"
    store: str  # "Trusted CA certificate", "tomcat-trust", "callmanager-trust"
    trusted: tuple[x509.Certificate, ...] | None  # None: not read (offline check)
    restart: str = ""  # what to restart there after the upload; "" nothing
    why: str = ""  # the TLS relation that needs it


@dataclass(frozen=True)
class Situation:
    """What is known about the box the certificate is for."""

    target: str
    role: str | None
    version: str | None
    current: x509.Certificate
    pending_csr: x509.CertificateSigningRequest | None
    zones: tuple[str, ...] = ()  # zone kinds (validate.Plan.zones)
    cluster_fqdn: str | None = None
    extra_sans: tuple[str, ...] = ()
    anchors: tuple[x509.Certificate, ...] = ()  # certificates known as trust anchors
    known_cas: tuple[x509.Certificate, ...] = ()  # CA certificates that may fill the chain
    holders: tuple[TrustHolder, ...] = ()
    csr_source: str = "the box"  # where the pending CSR came from, for messages
    # FN74362 inputs of an X15.4 Expressway-E (None: unknown, which keeps both EKUs required)
    server_eku_upload: bool | None = None  # xConfiguration XCP TLS Certificate CVS ...
    peer_version: str | None = None  # the traversal peer's version


@dataclass(frozen=True)
class TrustUpload:
    """Step D for one trust store: these CA certificates, then this restart."""

    where: str
    store: str
    certificates: tuple[x509.Certificate, ...]
    restart: str
    why: str


@dataclass(frozen=True)
class HandCheckResult:
    name: str
    problem: Problem | None


@dataclass(frozen=True)
class HandCheck:
    target: str
    results: tuple[HandCheckResult, ...]
    issuer_changed: bool
    path: tuple[x509.Certificate, ...]  # leaf, then its CA certificates up to the root
    uploads: tuple[TrustUpload, ...]

    @property
    def problems(self) -> tuple[Problem, ...]:
        return tuple(r.problem for r in self.results if r.problem is not None)

    @property
    def safe(self) -> bool:
        return not self.problems


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def build_path(
    leaf: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    """Leaf, its issuer, that one's issuer ... as far as `candidates` reach (signatures checked)."""
    path = [leaf]
    seen = {fingerprint(leaf)}
    while path[-1].subject != path[-1].issuer:
        parent = next(
            (c for c in candidates if fingerprint(c) not in seen and issued_by(path[-1], c)),
            None,
        )
        if parent is None:
            break
        path.append(parent)
        seen.add(fingerprint(parent))
    return tuple(path)


def _chain_problem(
    plan: Plan,
    leaf: x509.Certificate,
    supplied: Sequence[x509.Certificate],
    situation: Situation,
    now: datetime,
) -> tuple[Problem | None, tuple[x509.Certificate, ...]]:
    candidates = [*supplied, *situation.known_cas, *situation.anchors]
    path = build_path(leaf, candidates)
    top = path[-1]
    if top.subject != top.issuer:
        missing = printable(top.issuer.rfc4514_string())
        return (
            Problem(
                "chain-incomplete",
                f"{plan.target}: the chain stops at '{printable(top.subject.rfc4514_string())}': "
                f"the certificate of its issuer '{missing}' was not given and the box does not "
                "trust it; get the intermediate (and root) CA certificates from the CA and pass "
                "them in the file or with --chain",
            ),
            path,
        )
    roots = [
        c for c in (*supplied, *situation.anchors, *situation.known_cas) if c.subject == c.issuer
    ]
    intermediates = [c for c in path[1:] if c.subject != c.issuer]
    return check_chain(plan, leaf, intermediates, roots, now), path


def _uploads(situation: Situation, cas: Sequence[x509.Certificate]) -> tuple[TrustUpload, ...]:
    out = []
    for holder in situation.holders:
        have = {fingerprint(c) for c in holder.trusted or ()}
        missing = tuple(c for c in cas if fingerprint(c) not in have)
        if missing:
            out.append(TrustUpload(holder.where, holder.store, missing, holder.restart, holder.why))
    return tuple(out)


def check_hand_cert(
    leaf: x509.Certificate,
    supplied: Sequence[x509.Certificate],
    situation: Situation,
    now: datetime,
) -> HandCheck:
    """Steps C and D for `leaf` (with the CA certificates `supplied` beside it)."""
    current = facts_from_x509(situation.current)
    new = facts_from_x509(leaf)
    plan = make_plan(
        situation.target,
        current,
        role=situation.role,
        version=situation.version,
        cluster_fqdn=situation.cluster_fqdn,
        extra_sans=situation.extra_sans,
        zones=situation.zones,
        server_eku_upload=situation.server_eku_upload,
        peer_version=situation.peer_version,
    )
    issuer = printable(new.common_name or new.issuer)
    if situation.pending_csr is None:
        key: Problem | None = Problem(
            "no-pending-csr",
            f"{situation.target}: {situation.csr_source} has no pending CSR, so nothing shows "
            "that the box holds this certificate's private key; install only a certificate "
            "issued for the box's pending CSR (offline: pass the CSR with --csr)",
        )
    else:
        key = check_public_key(plan, leaf, situation.pending_csr)
    new_plan = make_plan(situation.target, new, role=situation.role, version=situation.version)
    chain, path = _chain_problem(plan, leaf, supplied, situation, now)
    results = (
        HandCheckResult("leaf", check_leaf(plan, new)),
        HandCheckResult("sans", check_sans_equal(plan, new)),
        HandCheckResult("wildcard", check_no_wildcard(new_plan)),
        HandCheckResult("eku", check_eku(plan, new, issuer)),
        HandCheckResult("key-usage", check_key_usage(plan, new)),
        HandCheckResult("key-matches-csr", key),
        HandCheckResult("validity", check_validity(plan, new, now)),
        HandCheckResult("chain", chain),
    )
    changed = diff_facts(current, new).aki_changed
    cas = [c for c in path[1:]]
    uploads = _uploads(situation, cas) if changed else ()
    return HandCheck(situation.target, results, changed, path, uploads)


def offline_holders(target: str, role: str | None) -> tuple[TrustHolder, ...]:
    """Cisco's step D as written, for a check without a config: who must trust a new CA."""
    holders = [
        TrustHolder(target, EXPRESSWAY_STORE_LABEL, None, why="this Expressway (its own chain)"),
    ]
    if role == "c":
        holders.append(
            TrustHolder(
                "the Expressway-E (traversal peer, every peer of its cluster)",
                EXPRESSWAY_STORE_LABEL,
                None,
                why="traversal zone: the E verifies the C's client certificate",
            )
        )
        for store in ("tomcat-trust", "callmanager-trust"):
            holders.append(
                TrustHolder(
                    "every Unified CM node (MRA or a secure zone to Unified CM)",
                    store,
                    None,
                    restart="Cisco CallManager, Cisco Tomcat",
                    why="SIP TLS and HTTPS from the Expressway-C",
                )
            )
    elif role == "e":
        holders.append(
            TrustHolder(
                "the Expressway-C (traversal peer, every peer of its cluster)",
                EXPRESSWAY_STORE_LABEL,
                None,
                why="traversal zone: the C verifies the E's server certificate",
            )
        )
    else:
        holders.append(
            TrustHolder(
                "the traversal peer (every peer of its cluster)",
                EXPRESSWAY_STORE_LABEL,
                None,
                why="traversal zone",
            )
        )
    return tuple(holders)
