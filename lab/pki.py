"""A small lab PKI: CAs and leaf certificates minted on the fly for simulators, demo and tests.

Imports nothing from monitor/, renewers/ or alerts/ (a simulator never shares the client's code).
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH


class _SharedKeys:
    """RSA keys handed out in turn instead of made fresh (share_rsa_keys); count 0: fresh."""

    count = 0
    turn = itertools.count()
    by_size: ClassVar[dict[int, list[rsa.RSAPrivateKey]]] = {}


def share_rsa_keys(count: int) -> None:
    """From now on `new_key("rsa", size)` hands out one of `count` keys per size, in turn, each
    made on first use; 0 makes every key fresh again. For benchmarks that simulate thousands of
    boxes: an RSA-2048 key costs 50-200 ms of CPU to make, and a client cannot tell that two
    simulated boxes hold the same key (every certificate and CSR is still signed anew)."""
    _SharedKeys.count = max(0, count)
    _SharedKeys.turn = itertools.count()
    _SharedKeys.by_size.clear()


def new_key(kind: str = "rsa", size: int = 2048) -> PrivateKey:
    if kind == "ec":
        curve = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1()}[size]
        return ec.generate_private_key(curve)
    if _SharedKeys.count:
        pool = _SharedKeys.by_size.setdefault(size, [])
        if len(pool) < _SharedKeys.count:
            pool.append(rsa.generate_private_key(public_exponent=65537, key_size=size))
            return pool[-1]
        return pool[next(_SharedKeys.turn) % _SharedKeys.count]
    return rsa.generate_private_key(public_exponent=65537, key_size=size)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str, org: str = "expressway-certd lab") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _general_name(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


@dataclass
class CA:
    """A lab certificate authority (root, or intermediate when `parent` is set)."""

    name: str
    key: PrivateKey
    cert: x509.Certificate
    parent: CA | None = None

    @classmethod
    def create(
        cls,
        name: str = "Lab Root CA",
        *,
        parent: CA | None = None,
        days: int = 3650,
        key_kind: str = "ec",
        key_size: int = 256,
    ) -> CA:
        key = new_key(key_kind, key_size)
        now = datetime.now(UTC)
        issuer_name = parent.cert.subject if parent else _name(name)
        signer = parent.key if parent else key
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
            )
        )
        cert = builder.sign(signer, hashes.SHA256())
        return cls(name, key, cert, parent)

    def chain(self) -> list[x509.Certificate]:
        """This CA and its parents, issuing CA first, root last."""
        out: list[x509.Certificate] = []
        ca: CA | None = self
        while ca is not None:
            out.append(ca.cert)
            ca = ca.parent
        return out

    def root(self) -> CA:
        ca = self
        while ca.parent is not None:
            ca = ca.parent
        return ca

    def issue(
        self,
        common_name: str,
        sans: list[str] | None = None,
        *,
        key: PrivateKey | None = None,
        public_key: object | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        days: float = 365,
        eku: list[x509.ObjectIdentifier] | None = None,
        key_kind: str = "rsa",
        key_size: int = 2048,
    ) -> tuple[x509.Certificate, PrivateKey | None]:
        """Sign a leaf. Pass `public_key` (from a CSR) to sign a key held elsewhere."""
        if public_key is None and key is None:
            key = new_key(key_kind, key_size)
        pub = public_key if public_key is not None else key.public_key()  # type: ignore[union-attr]
        now = datetime.now(UTC)
        start = not_before or now - timedelta(days=1)
        end = not_after or now + timedelta(days=days)
        names = sans if sans is not None else [common_name]
        ekus = eku if eku is not None else [SERVER_AUTH, CLIENT_AUTH]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(pub)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), False)  # type: ignore[arg-type]
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
            )
        if ekus:
            builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key

    def write_bundle(self, path: Path) -> Path:
        """Write the root certificate as a PEM trust bundle."""
        path.write_bytes(cert_pem(self.root().cert))
        return path


def write_key_and_chain(
    directory: Path,
    stem: str,
    leaf: x509.Certificate,
    key: PrivateKey,
    chain: list[x509.Certificate],
) -> tuple[Path, Path]:
    """Write `<stem>.key` (0600) and `<stem>.pem` (leaf + chain) for an ssl context."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / f"{stem}.key"
    key_path.touch(mode=0o600)
    key_path.write_bytes(key_pem(key))
    cert_path = directory / f"{stem}.pem"
    cert_path.write_bytes(b"".join(cert_pem(c) for c in [leaf, *chain]))
    return cert_path, key_path
