"""Which EKUs an Expressway's server certificate must carry (Cisco FN74362, "EKU sunset").

X14.x and X15 before X15.4 use the server certificate as a TLS client certificate too
(traversal zone C->E, SIP TLS to Unified CM): serverAuth AND clientAuth. X15.4 accepts a
serverAuth-only certificate on Expressway-E for MRA. X15.5 separates server and client
certificates and can ignore the client-auth EKU.
"""

from __future__ import annotations

import re

from monitor.facts import CLIENT_AUTH, SERVER_AUTH, CertFacts

_VERSION = re.compile(r"^[XxVv]?(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def parse_version(version: str | None) -> tuple[int, int, int] | None:
    """ "X15.4.1" -> (15, 4, 1); None when absent or unreadable."""
    if not version:
        return None
    match = _VERSION.match(version.strip())
    if not match:
        return None
    return tuple(int(g or 0) for g in match.groups())  # type: ignore[return-value]


def client_auth_required(version: str | None, role: str | None) -> bool:
    """Must the server certificate carry TLS Web Client Authentication?

    Unknown version: yes (the safe answer for a traversal zone).
    """
    parsed = parse_version(version)
    if parsed is None or parsed < (15, 4, 0):
        return True
    if parsed < (15, 5, 0):
        return role != "e"
    return False


def required_ekus(version: str | None, role: str | None) -> tuple[str, ...]:
    if client_auth_required(version, role):
        return (SERVER_AUTH, CLIENT_AUTH)
    return (SERVER_AUTH,)


def eku_problem(facts: CertFacts, version: str | None, role: str | None) -> str | None:
    """None when the EKU set fits, else what is missing and why."""
    if not facts.eku:
        return None  # no EKU extension: any use is allowed (RFC 5280 4.2.1.12)
    missing = [oid for oid in required_ekus(version, role) if oid not in facts.eku]
    if not missing:
        return None
    names = {
        SERVER_AUTH: "TLS Web Server Authentication",
        CLIENT_AUTH: "TLS Web Client Authentication",
    }
    what = " and ".join(names[m] for m in missing)
    where = f"{version or 'unknown version'}" + (f" Expressway-{role.upper()}" if role else "")
    return f"missing {what}, which {where} requires (FN74362)"
