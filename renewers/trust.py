"""Which CA certificates may be pushed to trust stores: only a path from the new leaf's issuer
up to a root pinned in configuration for that CA. Trust distribution is the most privileged
thing this product does; a chain handed in at run time (`provide --chain`, a CA's answer) is
never an anchor, only a source of intermediates.

Pinned anchors of a CA, in this order: `trust_anchors` (any kind), the `chain` file of a
`manual` CA, the `trust_anchor` file that authenticates the CA's own server (EST, AD CS,
ACME). Only self-signed certificates of those files are anchors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from expressway_certd.monitor.config_ca import CAConfig
from expressway_certd.monitor.errors import ConfigError
from expressway_certd.renewers.ca.manual_config import ManualConfig


@dataclass(frozen=True)
class Anchors:
    """The roots pinned for one CA, and the config keys they come from (for messages)."""

    ca: str
    roots: tuple[x509.Certificate, ...]
    sources: tuple[str, ...]

    @property
    def fix(self) -> str:
        return (
            f"add the root this CA issues under to [ca.{self.ca}] trust_anchors = "
            '"root.pem" (a PEM file) if you trust it'
        )


def sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer and issued_by(cert, cert)


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _read(path: Path, ca: str, key: str) -> list[x509.Certificate]:
    try:
        return list(x509.load_pem_x509_certificates(path.read_bytes()))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"ca.{ca}.{key}: cannot read CA certificates from {path} ({exc}); "
            "give a PEM file of CA certificates"
        ) from exc


def pinned_anchors(config: CAConfig) -> Anchors:
    """The self-signed roots pinned in configuration for this CA (may be empty)."""
    files: list[tuple[str, Path]] = []
    if config.trust_anchors is not None:
        files.append(("trust_anchors", config.trust_anchors))
    if isinstance(config, ManualConfig) and config.chain is not None:
        files.append(("chain", config.chain))
    if config.trust_anchor is not None:
        files.append(("trust_anchor", config.trust_anchor))
    roots: list[x509.Certificate] = []
    sources: list[str] = []
    for key, path in files:
        found = [c for c in _read(path, config.name, key) if _self_signed(c)]
        if found:
            sources.append(f"ca.{config.name}.{key} ({path})")
        roots += [c for c in found if c not in roots]
    return Anchors(config.name, tuple(roots), tuple(sources))


def trust_path(
    leaf: x509.Certificate, chain: Sequence[x509.Certificate], anchors: Anchors
) -> list[x509.Certificate] | None:
    """The CA certificates from the leaf's issuer up to and including a pinned root, each
    signature checked; None when the leaf does not chain to a pinned root. Certificates of
    `chain` that are not on that path are never returned."""
    path: list[x509.Certificate] = []
    current = leaf
    pool = [c for c in chain if c != leaf]
    for _ in range(len(pool) + 1):
        root = next((r for r in anchors.roots if issued_by(current, r)), None)
        if root is not None:
            return [*path, root]
        parent = next((c for c in pool if c not in path and issued_by(current, c)), None)
        if parent is None or _self_signed(parent):
            return None  # a root nobody pinned, or nothing issued it
        path.append(parent)
        current = parent
    return None
