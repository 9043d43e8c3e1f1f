"""Read a certificate, chain, CSR or PKCS#7 file and render it as OpenSSL's text view.

The Expressway's "Show (decoded)" (Maintenance > Security > Server certificate) shows
OpenSSL's `x509 -text` rendering; `decode` prints the same layout (key material and the
signature value left out) followed by the facts this product works with. Every string that
comes from the file passes through `monitor.text.printable`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from expressway_certd.monitor.errors import CertParseError
from expressway_certd.monitor.facts import (
    EKU_NAMES,
    facts_from_x509,
    key_usage_names,
    pkcs7_certificates,
)
from expressway_certd.monitor.text import printable


@dataclass(frozen=True)
class Decoded:
    """What a file holds: `kind` is certificate, chain, csr or pkcs7."""

    kind: str
    certificates: tuple[x509.Certificate, ...] = ()
    csr: x509.CertificateSigningRequest | None = None


_PRIVATE_MARKERS = (b"PRIVATE KEY-----",)


def read_file_bytes(data: bytes, *, source: str) -> Decoded:
    """Classify and parse `data` (PEM or DER). Refuses private keys without reading them."""
    if not data.strip():
        raise CertParseError(f"{source}: the file is empty")
    if any(m in data for m in _PRIVATE_MARKERS):
        raise CertParseError(
            f"{source}: the file holds a private key; decode never reads private keys: "
            "pass the certificate, chain, CSR or PKCS#7 file instead"
        )
    if b"-----BEGIN" in data:
        return _read_pem(data, source)
    return _read_der(data, source)


def _read_pem(data: bytes, source: str) -> Decoded:
    if b"-----BEGIN PKCS7-----" in data or b"-----BEGIN CMS-----" in data:
        try:
            return Decoded("pkcs7", tuple(pkcs7_certificates(data, pem=True)))
        except ValueError as exc:
            raise CertParseError(
                f"{source}: not a readable PKCS#7 certificate bundle ({exc})"
            ) from exc
    if b"CERTIFICATE REQUEST-----" in data:
        try:
            return Decoded("csr", csr=x509.load_pem_x509_csr(data))
        except ValueError as exc:
            raise CertParseError(f"{source}: not a readable CSR ({exc})") from exc
    if b"-----BEGIN CERTIFICATE-----" in data:
        try:
            certs = tuple(x509.load_pem_x509_certificates(data))
        except ValueError as exc:
            raise CertParseError(
                f"{source}: not a readable PEM certificate ({exc}); check the file is complete"
            ) from exc
        return Decoded("certificate" if len(certs) == 1 else "chain", certs)
    kind = data.split(b"-----BEGIN", 1)[1].split(b"-----", 1)[0].strip()
    raise CertParseError(
        f"{source}: PEM block '{printable(kind.decode(errors='replace'))}' is not a certificate, "
        "CSR or PKCS#7 bundle"
    )


def _read_der(data: bytes, source: str) -> Decoded:
    readers: list[Callable[[], Decoded]] = [
        lambda: Decoded("certificate", (x509.load_der_x509_certificate(data),)),
        lambda: Decoded("csr", csr=x509.load_der_x509_csr(data)),
        lambda: Decoded("pkcs7", tuple(pkcs7_certificates(data))),
    ]
    for reader in readers:
        try:
            return reader()
        except ValueError:
            continue
    raise CertParseError(
        f"{source}: neither PEM nor a DER certificate, CSR or PKCS#7 bundle; "
        "check the file was downloaded completely"
    )


# --- OpenSSL text layout --------------------------------------------------------------------

_NAME_SHORT = {
    NameOID.COMMON_NAME: "CN",
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.STREET_ADDRESS: "street",
    NameOID.TITLE: "title",
    NameOID.GIVEN_NAME: "GN",
    NameOID.SURNAME: "SN",
    NameOID.USER_ID: "UID",
}

_EXT_TITLES = {
    ExtensionOID.BASIC_CONSTRAINTS: "X509v3 Basic Constraints",
    ExtensionOID.KEY_USAGE: "X509v3 Key Usage",
    ExtensionOID.EXTENDED_KEY_USAGE: "X509v3 Extended Key Usage",
    ExtensionOID.SUBJECT_KEY_IDENTIFIER: "X509v3 Subject Key Identifier",
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER: "X509v3 Authority Key Identifier",
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME: "X509v3 Subject Alternative Name",
    ExtensionOID.ISSUER_ALTERNATIVE_NAME: "X509v3 Issuer Alternative Name",
    ExtensionOID.CRL_DISTRIBUTION_POINTS: "X509v3 CRL Distribution Points",
    ExtensionOID.AUTHORITY_INFORMATION_ACCESS: "Authority Information Access",
    ExtensionOID.CERTIFICATE_POLICIES: "X509v3 Certificate Policies",
}


def openssl_name(name: x509.Name) -> str:
    """`CN = a, O = b` in encoded order, as OpenSSL 3 prints names by default."""
    parts = []
    for rdn in name.rdns:
        for attr in rdn:
            label = _NAME_SHORT.get(attr.oid, attr.oid.dotted_string)
            value = attr.value if isinstance(attr.value, str) else attr.value.hex()
            parts.append(f"{label} = {value}")
    return printable(", ".join(parts))


def _colon_hex(data: bytes) -> str:
    return ":".join(f"{b:02X}" for b in data)


def _serial(serial: int) -> list[str]:
    if 0 <= serial < 2**63:
        return [f"Serial Number: {serial} (0x{serial:x})"]
    raw = serial.to_bytes((serial.bit_length() + 7) // 8 + 1, "big").lstrip(b"\x00")
    if raw and raw[0] & 0x80:
        raw = b"\x00" + raw
    return ["Serial Number:", "    " + ":".join(f"{b:02x}" for b in raw)]


def _when(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S %Y} GMT"


def _general_name(gn: x509.GeneralName) -> str:
    if isinstance(gn, x509.DNSName):
        return f"DNS:{gn.value}"
    if isinstance(gn, x509.IPAddress):
        return f"IP Address:{gn.value}"
    if isinstance(gn, x509.UniformResourceIdentifier):
        return f"URI:{gn.value}"
    if isinstance(gn, x509.RFC822Name):
        return f"email:{gn.value}"
    if isinstance(gn, x509.DirectoryName):
        return f"DirName:{openssl_name(gn.value)}"
    return f"othername:{gn.value!r}"


def _public_key(key: object) -> list[str]:
    if isinstance(key, rsa.RSAPublicKey):
        return ["Public Key Algorithm: rsaEncryption", f"    Public-Key: ({key.key_size} bit)"]
    if isinstance(key, ec.EllipticCurvePublicKey):
        return [
            "Public Key Algorithm: id-ecPublicKey",
            f"    Public-Key: ({key.curve.key_size} bit)",
            f"    ASN1 OID: {_CURVES.get(key.curve.name, key.curve.name)}",
        ]
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ["Public Key Algorithm: ED25519"]
    if isinstance(key, ed448.Ed448PublicKey):
        return ["Public Key Algorithm: ED448"]
    if isinstance(key, dsa.DSAPublicKey):
        return ["Public Key Algorithm: dsaEncryption", f"    Public-Key: ({key.key_size} bit)"]
    return [f"Public Key Algorithm: {type(key).__name__}"]


_CURVES = {"secp256r1": "prime256v1"}


def _extension_lines(ext: x509.Extension[x509.ExtensionType]) -> list[str]:
    value = ext.value
    if isinstance(value, x509.BasicConstraints):
        text = "CA:TRUE" if value.ca else "CA:FALSE"
        if value.path_length is not None:
            text += f", pathlen:{value.path_length}"
        return [text]
    if isinstance(value, x509.KeyUsage):
        return [", ".join(key_usage_names(value))]
    if isinstance(value, x509.ExtendedKeyUsage):
        return [", ".join(EKU_NAMES.get(oid.dotted_string, oid.dotted_string) for oid in value)]
    if isinstance(value, x509.SubjectKeyIdentifier):
        return [_colon_hex(value.digest)]
    if isinstance(value, x509.AuthorityKeyIdentifier):
        return [_colon_hex(value.key_identifier)] if value.key_identifier else []
    if isinstance(value, x509.SubjectAlternativeName | x509.IssuerAlternativeName):
        return [", ".join(_general_name(gn) for gn in value)]
    if isinstance(value, x509.CRLDistributionPoints):
        lines = []
        for point in value:
            lines.append("Full Name:")
            lines += [f"  {_general_name(gn)}" for gn in point.full_name or []]
        return lines
    if isinstance(value, x509.AuthorityInformationAccess):
        labels = {"1.3.6.1.5.5.7.48.1": "OCSP", "1.3.6.1.5.5.7.48.2": "CA Issuers"}
        return [
            f"{labels.get(d.access_method.dotted_string, d.access_method.dotted_string)} - "
            f"{_general_name(d.access_location)}"
            for d in value
        ]
    if isinstance(value, x509.CertificatePolicies):
        return [f"Policy: {p.policy_identifier.dotted_string}" for p in value]
    return ["(not decoded)"]


def _extensions(extensions: x509.Extensions, indent: str) -> list[str]:
    lines = []
    for ext in extensions:
        title = _EXT_TITLES.get(ext.oid, ext.oid.dotted_string)
        lines.append(f"{indent}{title}:{' critical' if ext.critical else ''}")
        lines += [f"{indent}    {printable(line)}" for line in _extension_lines(ext)]
    return lines


def _signature_name(oid: x509.ObjectIdentifier) -> str:
    name = getattr(oid, "_name", None)
    return name if isinstance(name, str) and name != "Unknown OID" else oid.dotted_string


def certificate_text(cert: x509.Certificate) -> list[str]:
    """`openssl x509 -text -noout` layout, without key material and signature value."""
    lines = [
        "Certificate:",
        "    Data:",
        f"        Version: {cert.version.value + 1} (0x{cert.version.value:x})",
        *(f"        {line}" for line in _serial(cert.serial_number)),
        f"        Signature Algorithm: {_signature_name(cert.signature_algorithm_oid)}",
        f"        Issuer: {openssl_name(cert.issuer)}",
        "        Validity",
        f"            Not Before: {_when(cert.not_valid_before_utc)}",
        f"            Not After : {_when(cert.not_valid_after_utc)}",
        f"        Subject: {openssl_name(cert.subject)}",
        "        Subject Public Key Info:",
        *(f"            {line}" for line in _public_key(cert.public_key())),
    ]
    if len(cert.extensions):
        lines.append("        X509v3 extensions:")
        lines += _extensions(cert.extensions, "            ")
    return lines


def csr_text(csr: x509.CertificateSigningRequest) -> list[str]:
    """`openssl req -text -noout` layout, without key material and signature value."""
    lines = [
        "Certificate Request:",
        "    Data:",
        "        Version: 1 (0x0)",
        f"        Subject: {openssl_name(csr.subject)}",
        "        Subject Public Key Info:",
        *(f"            {line}" for line in _public_key(csr.public_key())),
        "        Attributes:",
    ]
    if len(csr.extensions):
        lines.append("            Requested Extensions:")
        lines += _extensions(csr.extensions, "                ")
    lines.append(f"    Signature Algorithm: {_signature_name(csr.signature_algorithm_oid)}")
    lines.append(f"    Signature valid: {'yes' if csr.is_signature_valid else 'NO'}")
    return lines


def _spki_sha256(key: object) -> str:
    der = key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return sha256(der).hexdigest()


def certificate_facts(cert: x509.Certificate, now: datetime) -> list[str]:
    """The facts this product compares (Cisco's steps A, C and D), one per line."""
    facts = facts_from_x509(cert)
    dns = ", ".join(facts.dns_names) or "-"
    return [
        "Facts:",
        f"    SHA-256 fingerprint   {facts.sha256}",
        f"    Public key SHA-256    {facts.public_key_sha256}",
        f"    Days left             {facts.days_left(now):.1f}"
        + (" (EXPIRED)" if facts.not_after <= now else ""),
        f"    DNS names (step B)    {printable(dns)}",
        f"    EKU                   {', '.join(facts.eku_names()) or '- (any use)'}",
        f"    Key Usage             {', '.join(facts.key_usage) or '-'}",
        f"    Authority Key Id      {facts.aki or '-'}",
        f"    Subject Key Id        {facts.ski or '-'}",
        f"    CA certificate        {'yes' if facts.is_ca else 'no'}"
        + (", self-signed" if facts.self_signed else ""),
    ]


def chain_links(certs: tuple[x509.Certificate, ...]) -> list[str]:
    """Whether each certificate of a bundle is signed by the next one (leaf first)."""
    lines = ["Chain:"]
    for i, (child, parent) in enumerate(itertools.pairwise(certs), start=1):
        try:
            child.verify_directly_issued_by(parent)
            ok = "signed by"
        except (ValueError, TypeError, InvalidSignature):
            ok = "NOT signed by"
        lines.append(f"    #{i} {ok} #{i + 1}")
    last = certs[-1]
    top = "a self-signed root" if last.subject == last.issuer else "not a root (incomplete chain)"
    lines.append(f"    #{len(certs)} is {top}")
    return lines


def render(decoded: Decoded, now: datetime) -> str:
    """The whole `decode` output for one file."""
    out: list[str] = []
    if decoded.csr is not None:
        out += csr_text(decoded.csr)
        out.append("Facts:")
        out.append(f"    Public key SHA-256    {_spki_sha256(decoded.csr.public_key())}")
        return "\n".join(out)
    certs = decoded.certificates
    for i, cert in enumerate(certs, start=1):
        if len(certs) > 1:
            out.append(f"=== #{i} of {len(certs)} ({decoded.kind}) ===")
        out += certificate_text(cert)
        out += certificate_facts(cert, now)
    if len(certs) > 1:
        out += chain_links(certs)
    if not certs:
        out.append(f"({decoded.kind} holds no certificates)")
    return "\n".join(out)
