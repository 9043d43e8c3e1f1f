"""Zone model for the lab: whether a traversal zone (Expressway-C <-> E) or a secure zone
(Expressway-C <-> Unified CM) would come up with the certificates and trust stores as they are.

A zone is Active only while each side is reachable, the server side's served certificate and
the client side's CLIENT certificate chain to a CA the other side trusts, are within their
validity and carry the EKU their version needs (reference/expressway.md, "EKU sunset"; Cisco
doc 225693: from X15.5 the box presents its client certificate, a separate store, whenever it
is the TLS client). Otherwise the zone is Failed with the first reason found.
Imports nothing from monitor/, renewers/ or alerts/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

ACTIVE = "Active"
FAILED = "Failed"


class TlsParty(Protocol):
    """What the zone model needs from a simulated box."""

    name: str
    version: str

    @property
    def reachable(self) -> bool: ...

    @property
    def served_cert(self) -> x509.Certificate: ...

    @property
    def client_cert(self) -> x509.Certificate:
        """What the party presents when it opens TLS (X15.5: its client certificate store)."""
        ...

    @property
    def zone_trust(self) -> list[x509.Certificate]: ...

    def needs_client_auth(self) -> bool: ...


def parse_version(version: str) -> tuple[int, int]:
    """'X15.4' or 'X14.3.1' -> (15, 4)."""
    match = re.match(r"^[XxVv](\d+)\.(\d+)", version)
    if not match:
        raise ValueError(f"not an Expressway version: {version!r}")
    return int(match.group(1)), int(match.group(2))


def expressway_needs_client_auth(version: str, role: str, eku_checking: bool) -> bool:
    """Whether an Expressway's server certificate must carry TLS Web Client Authentication.

    Before X15.4 both roles need it. X15.4 accepts a serverAuth-only certificate on
    Expressway-E. From X15.5 the client-auth EKU check can be turned off (`xConfiguration SIP
    TLS Certificate ExtendedKeyUsage Checking Mode: Off`, here `eku_checking=False`).
    """
    v = parse_version(version)
    if v < (15, 4):
        return True
    if v < (15, 5):
        return role != "e"
    return eku_checking


def _has_eku(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bool:
    try:
        ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        return True  # no EKU extension means no restriction
    return oid in ext.value or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in ext.value


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, Exception):  # InvalidSignature has no common base
        return False
    return True


def chain_problem(
    leaf: x509.Certificate,
    trusted: list[x509.Certificate],
    now: datetime | None = None,
) -> str | None:
    """None when `leaf` chains to a self-signed CA in `trusted` (intermediates also taken
    from `trusted`) and every link is valid now; else why not, in a sentence."""
    now = now or datetime.now(UTC)
    cert = leaf
    for _ in range(8):
        if cert.not_valid_after_utc < now:
            return f"certificate '{cert.subject.rfc4514_string()}' has expired"
        if cert.not_valid_before_utc > now:
            return f"certificate '{cert.subject.rfc4514_string()}' is not valid yet"
        if cert is not leaf and cert.issuer == cert.subject and _issued_by(cert, cert):
            return None
        issuer = next((c for c in trusted if _issued_by(cert, c)), None)
        if issuer is None:
            return f"issuer '{cert.issuer.rfc4514_string()}' is not a trusted CA"
        if issuer.issuer == issuer.subject:
            return None if issuer.not_valid_after_utc >= now else "trusted root CA has expired"
        cert = issuer
    return "certificate chain is too long"


def _check_side(server: TlsParty, client: TlsParty, now: datetime) -> str | None:
    """Problems when `client` opens mutual TLS to `server`: the server presents its served
    certificate, the client its client certificate (the same one before X15.5)."""
    presented = ((server, server.served_cert, client), (client, client.client_cert, server))
    for side, cert, verifier in presented:
        problem = chain_problem(cert, verifier.zone_trust, now)
        if problem:
            what = "client certificate" if cert is not side.served_cert else "certificate"
            return f"{verifier.name} does not trust the {what} of {side.name}: {problem}"
    if not _has_eku(server.served_cert, ExtendedKeyUsageOID.SERVER_AUTH):
        return f"certificate of {server.name} lacks TLS Web Server Authentication EKU"
    checked = [(client, client.client_cert)]
    if server.client_cert is server.served_cert:  # before X15.5 one certificate does both
        checked.append((server, server.served_cert))
    for side, cert in checked:
        if side.needs_client_auth() and not _has_eku(cert, ExtendedKeyUsageOID.CLIENT_AUTH):
            what = "client certificate" if cert is not side.served_cert else "certificate"
            return (
                f"{what} of {side.name} lacks TLS Web Client Authentication EKU, "
                f"which {side.version} requires"
            )
    return None


def _version_mismatch(a: TlsParty, b: TlsParty) -> bool:
    versions = {parse_version(a.version), parse_version(b.version)}
    return max(versions) >= (15, 5) and len(versions) > 1


@dataclass
class Zone:
    """A zone between two parties; `client` opens the TLS connection to `server`."""

    name: str
    kind: str  # Expressway zone type as the GUI names it
    client: TlsParty
    server: TlsParty

    def status(self, now: datetime | None = None) -> tuple[str, str]:
        """(state, reason): ('Active', '') or ('Failed', why)."""
        now = now or datetime.now(UTC)
        for side in (self.client, self.server):
            if not side.reachable:
                return FAILED, f"{side.name} is not reachable (restarting or stopped)"
        if self.kind == "Traversal" and _version_mismatch(self.client, self.server):
            return FAILED, (
                f"{self.client.name} runs {self.client.version} and {self.server.name} "
                f"runs {self.server.version}; from X15.5 both sides must run the same version"
            )
        problem = _check_side(self.server, self.client, now)
        return (FAILED, problem) if problem else (ACTIVE, "")


def traversal_zone(name: str, expressway_c: TlsParty, expressway_e: TlsParty) -> Zone:
    """The Unified Communications traversal zone: C connects out to E (mutual TLS)."""
    return Zone(name, "Traversal", expressway_c, expressway_e)


def secure_zone(name: str, expressway_c: TlsParty, unified_cm: TlsParty) -> Zone:
    """The secure (SIP TLS) neighbor zone from Expressway-C to Unified CM."""
    return Zone(name, "Neighbor", expressway_c, unified_cm)
