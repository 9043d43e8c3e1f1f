"""Which EKUs an Expressway's certificates must carry (Cisco FN74362, "EKU sunset").

X14.x and X15 before X15.4 use the server certificate as a TLS client certificate too
(traversal zone C->E, SIP TLS to Unified CM): serverAuth AND clientAuth. X15.4 accepts a
serverAuth-only certificate on an Expressway-E, but only with `xConfiguration XCP TLS
Certificate CVS EnableServerEkuUpload: On`, C and E on the same version, and not where the E
is itself a TLS client needing clientAuth (B2B DNS zones with TLS, XMPP federation, MRA
onboarding). X15.5 separates server and client certificate stores (Cisco doc 225693; the
switch is deprecated there): the server certificate needs serverAuth, the client certificate
clientAuth.

`decide_eku` is the renewal's rule (every input explicit, the deciding rule named);
`client_auth_required` / `eku_problem` judge an installed certificate for the monitor.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from expressway_certd.monitor.facts import CLIENT_AUTH, EKU_NAMES, SERVER_AUTH, CertFacts

_VERSION = re.compile(r"^[XxVv]?(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def parse_version(version: str | None) -> tuple[int, int, int] | None:
    """ "X15.4.1" -> (15, 4, 1); None when absent or unreadable."""
    if not version:
        return None
    match = _VERSION.match(version.strip())
    if not match:
        return None
    return tuple(int(g or 0) for g in match.groups())  # type: ignore[return-value]


SERVER_ONLY_SWITCH = "xConfiguration XCP TLS Certificate CVS EnableServerEkuUpload"
# Uses in which an X15.4 Expressway-E is itself a TLS client needing clientAuth (FN74362).
E_TLS_CLIENT_USES = {
    "b2b-dns-tls": "a B2B DNS zone with TLS",
    "xmpp-federation": "XMPP federation",
    "mra-onboarding": "MRA device onboarding",
    "unified-cm": "a secure zone to Unified CM",
    "traversal-client": "a traversal client zone",
}


@dataclass(frozen=True)
class EkuDecision:
    """The EKUs a new certificate must carry, the rule that decided and why (a sentence)."""

    required: tuple[str, ...]
    rule: str  # stable name, e.g. "x15.4-e-switch-off"
    reason: str


BOTH = (SERVER_AUTH, CLIENT_AUTH)


def decide_eku(
    version: str | None,
    role: str | None,
    *,
    cert_kind: str = "server",
    server_eku_upload: bool | None = None,
    peer_version: str | None = None,
    e_tls_client_uses: Sequence[str] = (),
) -> EkuDecision:
    """FN74362 as a list of rules, first match wins; unknown inputs give the safe answer."""
    parsed = parse_version(version)
    if cert_kind == "client":
        return EkuDecision(
            (CLIENT_AUTH,),
            "x15.5-client-certificate",
            "the X15.5 client certificate is what the box presents as a TLS client (traversal "
            "zone, SIP TLS and TFTP to Unified CM); it needs TLS Web Client Authentication",
        )
    if parsed is None:
        return EkuDecision(BOTH, "version-unknown", "the version is unknown: both EKUs, safely")
    if parsed < (15, 4, 0):
        return EkuDecision(
            BOTH,
            "before-x15.4",
            f"{version} uses its server certificate as its TLS client certificate too",
        )
    if parsed >= (15, 5, 0):
        return EkuDecision(
            (SERVER_AUTH,),
            "x15.5-server-certificate",
            f"{version} keeps a separate client certificate, so the server certificate needs "
            "TLS Web Server Authentication only",
        )
    if role != "e":
        return EkuDecision(
            BOTH,
            "x15.4-c-needs-client-auth",
            f"an {version} Expressway-{(role or '?').upper()} is the TLS client of the "
            "traversal zone and of Unified CM with its server certificate",
        )
    if server_eku_upload is not True:
        state = "Off" if server_eku_upload is False else "not read"
        return EkuDecision(
            BOTH,
            "x15.4-e-switch-off",
            f"'{SERVER_ONLY_SWITCH}' is {state}; only with it On does an X15.4 Expressway-E "
            "accept a serverAuth-only certificate",
        )
    peer = parse_version(peer_version)
    if peer is None or peer[:2] != parsed[:2]:
        return EkuDecision(
            BOTH,
            "x15.4-e-peer-version",
            f"the Expressway-C runs {peer_version or 'an unknown version'}, not {version}; "
            "serverAuth-only needs C and E on the same version",
        )
    uses = [E_TLS_CLIENT_USES.get(u, u) for u in e_tls_client_uses]
    if uses:
        return EkuDecision(
            BOTH,
            "x15.4-e-is-tls-client",
            f"the Expressway-E is itself a TLS client needing clientAuth ({', '.join(uses)})",
        )
    return EkuDecision(
        (SERVER_AUTH,),
        "x15.4-e-server-only-allowed",
        f"'{SERVER_ONLY_SWITCH}' is On, C and E run {version}, and the E is not a TLS client "
        "elsewhere",
    )


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


def eku_problem(
    facts: CertFacts, version: str | None, role: str | None, cert_kind: str = "server"
) -> str | None:
    """None when the EKU set fits, else what is missing and why. `cert_kind` "client" is the
    X15.5 client certificate, which needs TLS Web Client Authentication."""
    if not facts.eku:
        return None  # no EKU extension: any use is allowed (RFC 5280 4.2.1.12)
    wanted = (CLIENT_AUTH,) if cert_kind == "client" else required_ekus(version, role)
    missing = [oid for oid in wanted if oid not in facts.eku]
    if not missing:
        return None
    what = " and ".join(EKU_NAMES[m] for m in missing)
    where = f"{version or 'unknown version'}" + (f" Expressway-{role.upper()}" if role else "")
    if cert_kind == "client":
        where += " client certificate"
    return f"missing {what}, which {where} requires (FN74362)"
