"""Advisory findings on a served chain: what the stricter web PKI rules (CA/Browser Forum
baseline, RFC 5280 "MUST"s that OpenSSL does not enforce) and current TLS practice would object
to, although an OpenSSL-based peer such as an Expressway or Unified CM accepts the chain.

A finding never changes the chain verdict (`chain_verified`); it is reported under `lint` by
`scan --json`, as `expressway_cert_lint_finding` on /metrics and by an info-level alert.
The finding codes below are an interface (metric label values): add, never rename.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from expressway_certd.monitor.facts import CertFacts

CA_WITHOUT_KEY_USAGE = "ca_without_key_usage"
LEAF_WITHOUT_SAN = "leaf_without_san"
WEAK_SIGNATURE = "weak_signature_algorithm"
WEAK_KEY = "weak_key"
LEGACY_TLS = "legacy_tls_version"
NOT_WEBPKI = "webpki_rejects"

FINDINGS = (
    CA_WITHOUT_KEY_USAGE,
    LEAF_WITHOUT_SAN,
    WEAK_SIGNATURE,
    WEAK_KEY,
    LEGACY_TLS,
    NOT_WEBPKI,
)

LEGACY_TLS_VERSIONS = frozenset({"SSLv2", "SSLv3", "TLSv1", "TLSv1.1"})
_WEAK_HASHES = ("md2", "md4", "md5", "sha1")
_MIN_BITS = {"RSA": 2048, "DSA": 2048, "EC": 256}


@dataclass(frozen=True, order=True)
class LintFinding:
    """One advisory: `finding` is one of FINDINGS, `subject` the certificate it is about
    (empty for the connection itself), `detail` a sentence for the operator."""

    finding: str
    subject: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"finding": self.finding, "subject": self.subject, "detail": self.detail}


def _weak_hash(signature_algorithm: str) -> str | None:
    name = signature_algorithm.lower()
    return next((h for h in _WEAK_HASHES if name.startswith(h) or f"with{h}" in name), None)


def lint_chain(path: Sequence[CertFacts]) -> tuple[LintFinding, ...]:
    """Findings on a chain, leaf first (the path OpenSSL built, trust anchor last, or the
    served chain when no path was built)."""
    if not path:
        return ()
    out: list[LintFinding] = []
    leaf = path[0]
    if not leaf.sans:
        out.append(
            LintFinding(
                LEAF_WITHOUT_SAN,
                leaf.subject,
                "the leaf has no subjectAltName: clients that follow RFC 6125 (browsers, "
                "Jabber, Webex) ignore the CN; reissue with SANs",
            )
        )
    for position, cert in enumerate(path):
        is_anchor_self_signature = position == len(path) - 1 and cert.self_signed
        if cert.is_ca and position > 0 and not cert.key_usage:
            out.append(
                LintFinding(
                    CA_WITHOUT_KEY_USAGE,
                    cert.subject,
                    "CA certificate has no keyUsage extension (OpenSSL accepts it; RFC 5280 "
                    "and the web PKI require keyCertSign): reissue the CA with "
                    "keyUsage=critical,keyCertSign,cRLSign when convenient",
                )
            )
        weak = _weak_hash(cert.signature_algorithm)
        if weak and not is_anchor_self_signature:
            out.append(
                LintFinding(
                    WEAK_SIGNATURE,
                    cert.subject,
                    f"signed with {cert.signature_algorithm}: OpenSSL at security level 1 or "
                    "more (Debian's default is 2) refuses it in TLS; reissue with SHA-256",
                )
            )
        floor = _MIN_BITS.get(cert.key_type)
        if floor is not None and 0 < cert.key_size < floor:
            out.append(
                LintFinding(
                    WEAK_KEY,
                    cert.subject,
                    f"{cert.key_type} {cert.key_size}-bit key is below {floor} bits: OpenSSL at "
                    "security level 2 refuses it in TLS; reissue with a stronger key",
                )
            )
    return tuple(out)


def lint_tls(version: str | None) -> tuple[LintFinding, ...]:
    """A finding when the endpoint negotiated a TLS version older than 1.2."""
    if version in LEGACY_TLS_VERSIONS:
        return (
            LintFinding(
                LEGACY_TLS,
                "",
                f"the endpoint negotiated {version} with a client offering TLS 1.0 to 1.3: "
                "set the Expressway's TLS minimum version to 1.2 (Maintenance > Security > "
                "Ciphers)",
            ),
        )
    return ()


def webpki_finding(subject: str, reason: str) -> LintFinding:
    """The web PKI verifier refused a chain OpenSSL accepts, for a reason not named above."""
    return LintFinding(
        NOT_WEBPKI,
        subject,
        f"the web PKI rules (cryptography's verifier) refuse this chain: {reason}; "
        "OpenSSL-based peers accept it",
    )
