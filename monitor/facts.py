"""Certificate facts: parse one X.509 certificate into frozen typed facts, and diff two.

These are the "Show (decoded)" facts of Cisco's step A and what steps C and D compare.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from expressway_certd.monitor.errors import CertParseError

SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH.dotted_string  # 1.3.6.1.5.5.7.3.1
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string  # 1.3.6.1.5.5.7.3.2

# OID -> the name OpenSSL and the Expressway's "Show (decoded)" print.
EKU_NAMES = {
    SERVER_AUTH: "TLS Web Server Authentication",
    CLIENT_AUTH: "TLS Web Client Authentication",
    ExtendedKeyUsageOID.CODE_SIGNING.dotted_string: "Code Signing",
    ExtendedKeyUsageOID.EMAIL_PROTECTION.dotted_string: "E-mail Protection",
    ExtendedKeyUsageOID.TIME_STAMPING.dotted_string: "Time Stamping",
    ExtendedKeyUsageOID.OCSP_SIGNING.dotted_string: "OCSP Signing",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE.dotted_string: "Any Extended Key Usage",
}

# The names config files use for the EKUs a CA issues (`[ca.NAME] ekus = ["serverAuth", ...]`).
EKU_CONFIG_NAMES = {"serverAuth": SERVER_AUTH, "clientAuth": CLIENT_AUTH}


def eku_config_name(oid: str) -> str:
    """The name configuration uses for an EKU (`serverAuth`, `clientAuth`), else its OID."""
    for name, known in EKU_CONFIG_NAMES.items():
        if known == oid:
            return name
    return oid


def pkcs7_certificates(data: bytes, *, pem: bool = False) -> list[x509.Certificate]:
    """The certificates of a PKCS#7 certs-only bag; ValueError for anything else.

    cryptography raises UnsupportedAlgorithm (not ValueError) for a well-formed PKCS#7 of
    another content type (data, enveloped, ...): a CA answer is input, so both mean "not a
    certificate bag" to the caller. A DER bag is read by `_der_bag_certificates` first, so
    one written in OpenSSL's order (not DER-sorted) needs no deprecated BER fallback.
    """
    if not pem:
        with contextlib.suppress(ValueError):
            return _der_bag_certificates(data)
    # PKCS#7 pulls in the e-mail package; only CA answers need it, not `scan` (fast start)
    from cryptography.hazmat.primitives.serialization import pkcs7  # noqa: PLC0415 - heavy, only for CA answers

    try:
        if pem:
            return pkcs7.load_pem_pkcs7_certificates(data)
        return pkcs7.load_der_pkcs7_certificates(data)
    except UnsupportedAlgorithm as exc:
        raise ValueError(f"not a PKCS#7 signed-data certificate bag ({exc})") from None


_SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")  # OID 1.2.840.113549.1.7.2, DER


def _der_element(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start, end) of the value of the definite-length DER element at `pos`."""
    if pos + 2 > end:
        raise ValueError("truncated")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        size = first & 0x7F
        if not 1 <= size <= 4 or pos + size > end:
            raise ValueError("indefinite or oversized length")
        length = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    else:
        length = first
    if pos + length > end:
        raise ValueError("truncated")
    return tag, pos, pos + length


def _der_bag_certificates(data: bytes) -> list[x509.Certificate]:
    """The certificates of a DER certs-only SignedData in the order they are written.

    OpenSSL (libest, `openssl crl2pkcs7`) writes the SET of certificates in the order it was
    given, not sorted as DER's SET OF rule wants; cryptography reads such a bag only through
    a deprecated BER fallback. ValueError for anything else (BER, another content type)."""
    tag, pos, end = _der_element(data, 0, len(data))
    if tag != 0x30 or end != len(data) or data[pos : pos + len(_SIGNED_DATA)] != _SIGNED_DATA:
        raise ValueError("not a PKCS#7 SignedData")
    tag, pos, end = _der_element(data, pos + len(_SIGNED_DATA), end)  # [0] EXPLICIT content
    if tag != 0xA0:
        raise ValueError("no SignedData content")
    tag, pos, end = _der_element(data, pos, end)  # SignedData SEQUENCE
    if tag != 0x30:
        raise ValueError("SignedData is not a SEQUENCE")
    for expected in (0x02, 0x31, 0x30):  # version, digestAlgorithms, encapContentInfo
        tag, _, pos = _der_element(data, pos, end)
        if tag != expected:
            raise ValueError("malformed SignedData")
    if pos >= end or data[pos] != 0xA0:  # [0] IMPLICIT certificates (optional)
        return []
    _, pos, end = _der_element(data, pos, end)
    certs: list[x509.Certificate] = []
    while pos < end:
        tag, _, stop = _der_element(data, pos, end)
        if tag == 0x30:  # a Certificate; other CertificateChoices are not X.509 ones
            certs.append(x509.load_der_x509_certificate(data[pos:stop]))
        pos = stop
    return certs


def cert_pem(cert: x509.Certificate) -> str:
    """One certificate as PEM text."""
    return cert.public_bytes(serialization.Encoding.PEM).decode()


_KU_FIELDS = (
    ("digital_signature", "Digital Signature"),
    ("content_commitment", "Non Repudiation"),
    ("key_encipherment", "Key Encipherment"),
    ("data_encipherment", "Data Encipherment"),
    ("key_agreement", "Key Agreement"),
    ("key_cert_sign", "Certificate Sign"),
    ("crl_sign", "CRL Sign"),
)

_E = TypeVar("_E", bound=x509.ExtensionType)


@dataclass(frozen=True, order=True)
class SAN:
    """One subjectAltName entry; `kind` is DNS, IP, URI, email or other."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class CertFacts:
    """What one certificate says, in the words of the Expressway's decoded view."""

    subject: str
    issuer: str
    common_name: str | None
    serial: str  # hex, upper case, no separators
    sha256: str  # hex, lower case
    not_before: datetime  # aware UTC
    not_after: datetime  # aware UTC
    sans: tuple[SAN, ...]
    key_type: str  # RSA, EC, Ed25519, Ed448, DSA
    key_size: int  # bits (curve size for EC)
    key_usage: tuple[str, ...]
    eku: tuple[str, ...]  # dotted OIDs, sorted
    ski: str | None  # hex
    aki: str | None  # hex, the AKI keyIdentifier
    is_ca: bool
    signature_algorithm: str
    public_key_sha256: str = field(default="")  # SHA-256 of the SubjectPublicKeyInfo (DER)

    @property
    def dns_names(self) -> tuple[str, ...]:
        return tuple(s.value for s in self.sans if s.kind == "DNS")

    @property
    def self_signed(self) -> bool:
        return self.subject == self.issuer

    def eku_names(self) -> tuple[str, ...]:
        return tuple(EKU_NAMES.get(oid, oid) for oid in self.eku)

    def days_left(self, now: datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400.0

    def lifetime_seconds(self) -> float:
        return (self.not_after - self.not_before).total_seconds()


@dataclass(frozen=True)
class FactsDiff:
    """What changed between an old and a new certificate."""

    sans_added: tuple[SAN, ...]
    sans_removed: tuple[SAN, ...]
    eku_added: tuple[str, ...]
    eku_removed: tuple[str, ...]
    aki_changed: bool
    issuer_changed: bool
    key_changed: bool
    cert_changed: bool

    @property
    def sans_changed(self) -> bool:
        return bool(self.sans_added or self.sans_removed)

    @property
    def eku_changed(self) -> bool:
        return bool(self.eku_added or self.eku_removed)


def _hex(data: bytes) -> str:
    return data.hex()


def _name(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except ValueError:  # a value cryptography cannot render
        return "<unreadable name>"


def _common_name(name: x509.Name) -> str | None:
    try:
        attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _san_entries(san: x509.SubjectAlternativeName) -> tuple[SAN, ...]:
    out: list[SAN] = []
    for gn in san:
        if isinstance(gn, x509.DNSName):
            out.append(SAN("DNS", gn.value))
        elif isinstance(gn, x509.IPAddress):
            out.append(SAN("IP", str(gn.value)))
        elif isinstance(gn, x509.UniformResourceIdentifier):
            out.append(SAN("URI", gn.value))
        elif isinstance(gn, x509.RFC822Name):
            out.append(SAN("email", gn.value))
        elif isinstance(gn, x509.DirectoryName):
            out.append(SAN("DirName", _name(gn.value)))
        else:
            out.append(SAN("other", repr(gn.value)))
    return tuple(out)


def _key(cert: x509.Certificate) -> tuple[str, int, str]:
    try:
        key = cert.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return f"unsupported ({exc})", 0, ""
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.sha256(spki).hexdigest()
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size, digest
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size, digest
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256, digest
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456, digest
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size, digest
    return type(key).__name__, 0, digest


def key_usage_names(ku: x509.KeyUsage) -> tuple[str, ...]:
    """The key usages set, in OpenSSL's words and order ("Digital Signature", ...)."""
    names = [label for attr, label in _KU_FIELDS if getattr(ku, attr)]
    if ku.key_agreement:
        if ku.encipher_only:
            names.append("Encipher Only")
        if ku.decipher_only:
            names.append("Decipher Only")
    return tuple(names)


def _signature_algorithm(cert: x509.Certificate) -> str:
    oid = cert.signature_algorithm_oid
    name = getattr(oid, "_name", None)
    return name if isinstance(name, str) and name != "Unknown OID" else oid.dotted_string


def facts_json(facts: CertFacts | None) -> dict[str, object]:
    """The JSON keys every view of a certificate shares (API, `scan`, `check-cert`, `device`).

    None gives the same keys, empty: None for values, [] for lists (a failed probe in `scan`).
    Views add their own keys (days left, chain length) beside these.
    """
    if facts is None:
        values: dict[str, object] = dict.fromkeys(_FACT_KEYS)
        return values | {"sans": [], "key_usage": [], "eku": []}
    return {
        "subject": facts.subject,
        "issuer": facts.issuer,
        "serial": facts.serial,
        "sha256": facts.sha256,
        "not_before": facts.not_before.isoformat(),
        "not_after": facts.not_after.isoformat(),
        "sans": [str(s) for s in facts.sans],
        "key": f"{facts.key_type} {facts.key_size}",
        "key_usage": list(facts.key_usage),
        "eku": list(facts.eku),
        "ski": facts.ski,
        "aki": facts.aki,
        "signature_algorithm": facts.signature_algorithm,
    }


_FACT_KEYS = (
    "subject",
    "issuer",
    "serial",
    "sha256",
    "not_before",
    "not_after",
    "sans",
    "key",
    "key_usage",
    "eku",
    "ski",
    "aki",
    "signature_algorithm",
)


def facts_from_x509(cert: x509.Certificate) -> CertFacts:
    """Facts of an already loaded certificate. Raises CertParseError on unreadable extensions."""
    try:
        extensions = cert.extensions  # forces parsing of every extension
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CertParseError(f"certificate extensions are malformed: {exc}") from exc
    del extensions
    try:
        return _facts(cert)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # parsed lazily, on access
        raise CertParseError(f"certificate is malformed: {exc}") from exc


# Certificates whose facts a process keeps (cached_facts). A served chain's CA certificates
# are the same for hundreds of endpoints and stay at the recent end; a leaf is asked for twice
# within one verdict (the served chain, then the path OpenSSL built) and may then drop out.
# 512 entries of a few KiB each: about 2 MiB at most, whatever the number of endpoints.
FACTS_CACHE_SIZE = 512


@functools.lru_cache(maxsize=FACTS_CACHE_SIZE)
def cached_facts(cert: x509.Certificate) -> CertFacts:
    """`facts_from_x509`, remembered per process for the last FACTS_CACHE_SIZE certificates.

    Safe to share between trust stores and across time: facts are a function of the
    certificate alone (a `Certificate` is equal to, and hashes like, any other certificate of
    the same encoding), and nothing in them depends on the clock (`days_left` takes `now`).
    A certificate whose facts cannot be read raises CertParseError each time (not cached).
    """
    return facts_from_x509(cert)


def _facts(cert: x509.Certificate) -> CertFacts:
    key_type, key_size, spki_digest = _key(cert)
    # Each extension once, by its class (a certificate repeats none: parsing refuses that),
    # and the subject once: every access builds the Name again (a third of the cost).
    values = {type(ext.value): ext.value for ext in cert.extensions}
    eku_ext = _of(values, x509.ExtendedKeyUsage)
    ski_ext = _of(values, x509.SubjectKeyIdentifier)
    aki_ext = _of(values, x509.AuthorityKeyIdentifier)
    bc = _of(values, x509.BasicConstraints)
    ku = _of(values, x509.KeyUsage)
    san = _of(values, x509.SubjectAlternativeName)
    subject = cert.subject
    return CertFacts(
        subject=_name(subject),
        issuer=_name(cert.issuer),
        common_name=_common_name(subject),
        serial=format(cert.serial_number, "X"),
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
        not_before=cert.not_valid_before_utc.astimezone(UTC),
        not_after=cert.not_valid_after_utc.astimezone(UTC),
        sans=_san_entries(san) if san else (),
        key_type=key_type,
        key_size=key_size,
        key_usage=key_usage_names(ku) if ku else (),
        eku=tuple(sorted(oid.dotted_string for oid in eku_ext)) if eku_ext else (),
        ski=_hex(ski_ext.digest) if ski_ext else None,
        aki=_hex(aki_ext.key_identifier) if aki_ext and aki_ext.key_identifier else None,
        is_ca=bool(bc and bc.ca),
        signature_algorithm=_signature_algorithm(cert),
        public_key_sha256=spki_digest,
    )


def _of(values: dict[type, x509.ExtensionType], cls: type[_E]) -> _E | None:
    value = values.get(cls)
    return value if isinstance(value, cls) else None


def load_certificate(data: bytes | str, *, source: str = "input") -> x509.Certificate:
    """Load one certificate from PEM or DER bytes; CertParseError names `source` on failure."""
    raw = data.encode() if isinstance(data, str) else data
    if not raw.strip():
        raise CertParseError(f"{source}: empty input, expected a PEM or DER certificate")
    try:
        if b"-----BEGIN" in raw:
            if b"-----BEGIN CERTIFICATE-----" not in raw:
                kind = raw.split(b"-----BEGIN", 1)[1].split(b"-----", 1)[0].strip()
                raise CertParseError(
                    f"{source}: PEM block is '{kind.decode(errors='replace')}', "
                    "expected 'CERTIFICATE'"
                )
            if b"-----END CERTIFICATE-----" not in raw:
                raise CertParseError(f"{source}: PEM certificate is truncated (no END line)")
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(raw)
    except CertParseError:
        raise
    except (ValueError, TypeError, x509.InvalidVersion) as exc:
        raise CertParseError(
            f"{source}: not a readable X.509 certificate ({exc}); "
            "check the file is a complete PEM or DER certificate"
        ) from exc


def load_certificates(data: bytes | str, *, source: str = "input") -> list[x509.Certificate]:
    """Load every certificate of a PEM bundle (or one DER certificate), in file order."""
    raw = data.encode() if isinstance(data, str) else data
    if b"-----BEGIN" not in raw:
        return [load_certificate(raw, source=source)]
    marker = b"-----BEGIN CERTIFICATE-----"
    if marker not in raw:
        return [load_certificate(raw, source=source)]  # raises the clear error
    certs = []
    for i, chunk in enumerate(raw.split(marker)[1:], start=1):
        certs.append(load_certificate(marker + chunk, source=f"{source} (certificate #{i})"))
    return certs


def parse_facts(data: bytes | str, *, source: str = "input") -> CertFacts:
    """Facts of the first certificate in PEM or DER bytes; CertParseError on anything odd."""
    cert = load_certificate(data, source=source)
    try:
        return facts_from_x509(cert)
    except CertParseError as exc:
        raise CertParseError(f"{source}: {exc}") from exc


def diff_facts(old: CertFacts, new: CertFacts) -> FactsDiff:
    """What a renewal or an unexpected change altered: SANs, EKU, AKI, issuer, key."""
    old_sans, new_sans = set(old.sans), set(new.sans)
    old_eku, new_eku = set(old.eku), set(new.eku)
    return FactsDiff(
        sans_added=tuple(sorted(new_sans - old_sans)),
        sans_removed=tuple(sorted(old_sans - new_sans)),
        eku_added=tuple(sorted(new_eku - old_eku)),
        eku_removed=tuple(sorted(old_eku - new_eku)),
        aki_changed=old.aki != new.aki,
        issuer_changed=old.issuer != new.issuer,
        key_changed=old.public_key_sha256 != new.public_key_sha256,
        cert_changed=old.sha256 != new.sha256,
    )


def is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
