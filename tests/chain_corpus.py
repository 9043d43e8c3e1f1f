"""A corpus of certificate chains for the differential chain-verdict test, built with
`cryptography` here (not with lab/pki.py, so the corpus can hold what a careful CA never makes:
roots without keyUsage, SHA-1 and RSA-1024 signatures, unknown critical extensions, ...).

Each case is (name, anchors, served): `anchors` is the trust bundle, `served` the chain as an
endpoint would send it, leaf first. The expected verdict is deliberately not stored: the oracle
is Debian's `openssl verify`, asked case by case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@cache
def key(kind: str = "ec256", slot: int = 0) -> Key:
    """Keys are slow to make: one per (kind, slot), reused across cases."""
    del slot
    if kind == "ec256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    raise ValueError(kind)


# keyUsage shapes
KU_CA = "ca"  # keyCertSign + cRLSign (+ digitalSignature)
KU_NONE = "none"  # no keyUsage extension (OpenSSL's default v3_ca section)
KU_NO_CERTSIGN = "no-certsign"  # digitalSignature + cRLSign only
KU_LEAF = "leaf"


def _ku(shape: str) -> x509.KeyUsage | None:
    if shape == KU_NONE:
        return None
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=shape == KU_LEAF,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=shape == KU_CA,
        crl_sign=shape in (KU_CA, KU_NO_CERTSIGN),
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class Node:
    """One certificate and its private key."""

    cert: x509.Certificate
    key: Key

    @property
    def name(self) -> x509.Name:
        return self.cert.subject


UNKNOWN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1.1")


@dataclass
class Spec:
    cn: str
    ca: bool | None = True  # None: no basicConstraints at all
    ku: str = KU_CA
    pathlen: int | None = None
    not_before: datetime = NOW - 30 * DAY
    not_after: datetime = NOW + 365 * DAY
    sans: list[str] | None = None
    key_kind: str = "ec256"
    key_slot: int = 0
    hash_name: str = "sha256"
    unknown_critical: bool = False
    permitted_dns: list[str] | None = None
    eku: list[x509.ObjectIdentifier] | None = None
    extra: list[tuple[x509.ExtensionType, bool]] = field(default_factory=list)


def _hash(name: str, signer: Key) -> hashes.HashAlgorithm | None:
    if isinstance(signer, ed25519.Ed25519PrivateKey):
        return None
    return {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha1": hashes.SHA256()}[name]


_SHA256_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")
_SHA1_RSA = bytes.fromhex("300d06092a864886f70d0101050500")


def _resign_sha1(cert: x509.Certificate, signer: Key) -> x509.Certificate:
    """The same certificate signed with SHA-1. cryptography refuses to make SHA-1 signatures,
    so swap the (same-length) algorithm identifiers and replace the signature bytes."""
    assert isinstance(signer, rsa.RSAPrivateKey), "SHA-1 cases use RSA signers"
    der = cert.public_bytes(serialization.Encoding.DER)
    tbs = cert.tbs_certificate_bytes.replace(_SHA256_RSA, _SHA1_RSA)
    old_sig = cert.signature
    new_sig = signer.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    assert len(new_sig) == len(old_sig) and der.endswith(old_sig)
    head = der[: -len(old_sig)].replace(_SHA256_RSA, _SHA1_RSA)
    return x509.load_der_x509_certificate(head + new_sig)


_SERIAL = iter(range(0x1000, 0x100000))


def make(spec: Spec, issuer: Node | None = None, *, subject_key: Key | None = None) -> Node:
    """A certificate per `spec`, signed by `issuer` (self-signed when None)."""
    own = subject_key or key(spec.key_kind, spec.key_slot)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spec.cn)])
    signer = issuer.key if issuer else own
    issuer_name = issuer.name if issuer else name
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(own.public_key())
        .serial_number(next(_SERIAL))
        .not_valid_before(spec.not_before)
        .not_valid_after(spec.not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(own.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
    )
    if spec.ca is not None:
        b = b.add_extension(x509.BasicConstraints(spec.ca, spec.pathlen), True)
    ku = _ku(spec.ku)
    if ku is not None:
        b = b.add_extension(ku, True)
    if spec.sans:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in spec.sans]), False
        )
    if spec.eku:
        b = b.add_extension(x509.ExtendedKeyUsage(spec.eku), False)
    if spec.permitted_dns is not None:
        b = b.add_extension(
            x509.NameConstraints([x509.DNSName(d) for d in spec.permitted_dns], None), True
        )
    if spec.unknown_critical:
        b = b.add_extension(x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), True)
    for ext, critical in spec.extra:
        b = b.add_extension(ext, critical)
    cert = b.sign(signer, _hash(spec.hash_name, signer))  # type: ignore[arg-type]
    if spec.hash_name == "sha1":
        cert = _resign_sha1(cert, signer)
    return Node(cert, own)


def leaf_spec(**kw: object) -> Spec:
    base: dict[str, object] = {
        "cn": "expe.example.com",
        "ca": False,
        "ku": KU_LEAF,
        "sans": ["expe.example.com"],
        "eku": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        "key_slot": 9,
    }
    base.update(kw)
    return Spec(**base)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Case:
    name: str
    anchors: tuple[x509.Certificate, ...]
    served: tuple[x509.Certificate, ...]  # leaf first


def _three(
    root: Spec | None = None, inter: Spec | None = None, leaf: Spec | None = None
) -> tuple[Node, Node, Node]:
    r = make(root or Spec("Corpus Root", key_slot=1))
    i = make(inter or Spec("Corpus Issuing", key_slot=2), r)
    lf = make(leaf or leaf_spec(), i)
    return r, i, lf


def _std(name: str, **parts: Spec) -> Case:
    r, i, lf = _three(parts.get("root"), parts.get("inter"), parts.get("leaf"))
    return Case(name, (r.cert,), (lf.cert, i.cert))


def _cases() -> list[Callable[[], Case]]:
    out: list[Callable[[], Case]] = []

    def case(fn: Callable[[], Case]) -> Callable[[], Case]:
        out.append(fn)
        return fn

    @case
    def good() -> Case:
        return _std("good three-level chain")

    @case
    def root_no_ku() -> Case:
        return _std(
            "root without keyUsage (v3_ca)", root=Spec("Corpus Root", ku=KU_NONE, key_slot=1)
        )

    @case
    def inter_no_ku() -> Case:
        return _std(
            "intermediate without keyUsage", inter=Spec("Corpus Issuing", ku=KU_NONE, key_slot=2)
        )

    @case
    def both_no_ku() -> Case:
        return _std(
            "root and intermediate without keyUsage",
            root=Spec("Corpus Root", ku=KU_NONE, key_slot=1),
            inter=Spec("Corpus Issuing", ku=KU_NONE, key_slot=2),
        )

    @case
    def inter_ku_no_certsign() -> Case:
        return _std(
            "intermediate keyUsage lacks keyCertSign",
            inter=Spec("Corpus Issuing", ku=KU_NO_CERTSIGN, key_slot=2),
        )

    @case
    def root_ku_no_certsign() -> Case:
        return _std(
            "root keyUsage lacks keyCertSign",
            root=Spec("Corpus Root", ku=KU_NO_CERTSIGN, key_slot=1),
        )

    @case
    def leaf_cn_only() -> Case:
        return _std("leaf with CN only (no SAN)", leaf=leaf_spec(sans=None))

    @case
    def leaf_no_eku_no_ku() -> Case:
        return _std("leaf without EKU and keyUsage", leaf=leaf_spec(eku=None, ku=KU_NONE))

    @case
    def leaf_client_only() -> Case:
        return _std(
            "leaf with clientAuth EKU only",
            leaf=leaf_spec(eku=[ExtendedKeyUsageOID.CLIENT_AUTH]),
        )

    @case
    def pathlen_exceeded() -> Case:
        r = make(Spec("Corpus Root", pathlen=0, key_slot=1))
        i1 = make(Spec("Corpus Policy CA", key_slot=3), r)
        i2 = make(Spec("Corpus Issuing", key_slot=2), i1)
        lf = make(leaf_spec(), i2)
        return Case(
            "path length exceeded (root pathlen 0, two intermediates)",
            (r.cert,),
            (lf.cert, i2.cert, i1.cert),
        )

    @case
    def pathlen_ok() -> Case:
        return _std(
            "intermediate pathlen 0 issuing a leaf",
            inter=Spec("Corpus Issuing", pathlen=0, key_slot=2),
        )

    @case
    def inter_expired() -> Case:
        return _std(
            "expired intermediate",
            inter=Spec(
                "Corpus Issuing", not_before=NOW - 400 * DAY, not_after=NOW - DAY, key_slot=2
            ),
        )

    @case
    def inter_not_yet_valid() -> Case:
        return _std(
            "intermediate not yet valid",
            inter=Spec("Corpus Issuing", not_before=NOW + DAY, key_slot=2),
        )

    @case
    def leaf_expired() -> Case:
        return _std("expired leaf", leaf=leaf_spec(not_before=NOW - 100 * DAY, not_after=NOW - DAY))

    @case
    def root_expired() -> Case:
        return _std(
            "expired root in the bundle",
            root=Spec("Corpus Root", not_before=NOW - 900 * DAY, not_after=NOW - DAY, key_slot=1),
        )

    @case
    def missing_intermediate() -> Case:
        r, _i, lf = _three()
        return Case("intermediate missing from served chain", (r.cert,), (lf.cert,))

    @case
    def intermediate_in_bundle() -> Case:
        r, i, lf = _three()
        return Case("intermediate not served but in the bundle", (r.cert, i.cert), (lf.cert,))

    @case
    def only_intermediate_in_bundle() -> Case:
        _r, i, lf = _three()
        return Case("bundle holds only the intermediate (no root)", (i.cert,), (lf.cert, i.cert))

    @case
    def extra_unrelated() -> Case:
        r, i, lf = _three()
        stray = make(Spec("Stray CA", key_slot=4))
        return Case("extra unrelated certificate served", (r.cert,), (lf.cert, stray.cert, i.cert))

    @case
    def root_served_out_of_order() -> Case:
        r, i, lf = _three()
        return Case("root served, out of order", (r.cert,), (lf.cert, r.cert, i.cert))

    @case
    def reversed_two_intermediates() -> Case:
        r = make(Spec("Corpus Root", key_slot=1))
        i1 = make(Spec("Corpus Policy CA", key_slot=3), r)
        i2 = make(Spec("Corpus Issuing", key_slot=2), i1)
        lf = make(leaf_spec(), i2)
        return Case(
            "two intermediates served in reverse order", (r.cert,), (lf.cert, i1.cert, i2.cert)
        )

    @case
    def cross_signed_expired_second_path() -> Case:
        old_root = make(Spec("Corpus Old Root", key_slot=5))
        new_root = make(Spec("Corpus New Root", key_slot=6))
        cross = make(
            Spec("Corpus New Root", not_before=NOW - 900 * DAY, not_after=NOW - DAY, key_slot=6),
            old_root,
        )
        i = make(Spec("Corpus Issuing", key_slot=2), new_root)
        lf = make(leaf_spec(), i)
        return Case(
            "cross-signed root, expired cross path served, new root trusted",
            (new_root.cert, old_root.cert),
            (lf.cert, i.cert, cross.cert),
        )

    @case
    def cross_signed_only_old_root() -> Case:
        old_root = make(Spec("Corpus Old Root", key_slot=5))
        cross = make(
            Spec("Corpus New Root", not_before=NOW - 900 * DAY, not_after=NOW - DAY, key_slot=6),
            old_root,
        )
        new_root_key = key("ec256", 6)
        i = make(Spec("Corpus Issuing", key_slot=2), Node(cross.cert, new_root_key))
        lf = make(leaf_spec(), i)
        return Case(
            "cross-signed root, only the old root trusted, cross certificate expired",
            (old_root.cert,),
            (lf.cert, i.cert, cross.cert),
        )

    @case
    def name_constraints_ok() -> Case:
        return _std(
            "name constraints permit the leaf",
            inter=Spec("Corpus Issuing", permitted_dns=["example.com"], key_slot=2),
        )

    @case
    def name_constraints_violated() -> Case:
        return _std(
            "name constraints exclude the leaf SAN",
            inter=Spec("Corpus Issuing", permitted_dns=["other.org"], key_slot=2),
        )

    @case
    def name_constraints_cn_only() -> Case:
        return _std(
            "name constraints, leaf CN only outside them",
            inter=Spec("Corpus Issuing", permitted_dns=["other.org"], key_slot=2),
            leaf=leaf_spec(sans=None),
        )

    @case
    def unknown_critical_leaf() -> Case:
        return _std("unknown critical extension in leaf", leaf=leaf_spec(unknown_critical=True))

    @case
    def unknown_critical_inter() -> Case:
        return _std(
            "unknown critical extension in intermediate",
            inter=Spec("Corpus Issuing", unknown_critical=True, key_slot=2),
        )

    @case
    def sha1_leaf() -> Case:
        r = make(Spec("Corpus RSA Root", key_kind="rsa2048", key_slot=1))
        i = make(Spec("Corpus RSA Issuing", key_kind="rsa2048", key_slot=2), r)
        lf = make(leaf_spec(hash_name="sha1"), i)
        return Case("SHA-1 signature on the leaf", (r.cert,), (lf.cert, i.cert))

    @case
    def sha1_inter() -> Case:
        r = make(Spec("Corpus RSA Root", key_kind="rsa2048", key_slot=1))
        i = make(Spec("Corpus RSA Issuing", key_kind="rsa2048", key_slot=2, hash_name="sha1"), r)
        lf = make(leaf_spec(), i)
        return Case("SHA-1 signature on the intermediate", (r.cert,), (lf.cert, i.cert))

    @case
    def sha1_root() -> Case:
        r = make(Spec("Corpus RSA Root", key_kind="rsa2048", key_slot=1, hash_name="sha1"))
        i = make(Spec("Corpus RSA Issuing", key_kind="rsa2048", key_slot=2), r)
        lf = make(leaf_spec(), i)
        return Case("SHA-1 self-signature on the root", (r.cert,), (lf.cert, i.cert))

    @case
    def rsa1024_leaf() -> Case:
        return _std("RSA-1024 leaf key", leaf=leaf_spec(key_kind="rsa1024"))

    @case
    def rsa1024_inter() -> Case:
        return _std(
            "RSA-1024 intermediate key",
            inter=Spec("Corpus Issuing", key_kind="rsa1024", key_slot=2),
        )

    @case
    def p384() -> Case:
        return _std(
            "ECDSA P-384 throughout (SHA-384)",
            root=Spec("Corpus Root", key_kind="ec384", hash_name="sha384", key_slot=1),
            inter=Spec("Corpus Issuing", key_kind="ec384", hash_name="sha384", key_slot=2),
            leaf=leaf_spec(key_kind="ec384", hash_name="sha384"),
        )

    @case
    def ed25519_chain() -> Case:
        return _std(
            "Ed25519 throughout",
            root=Spec("Corpus Root", key_kind="ed25519", key_slot=1),
            inter=Spec("Corpus Issuing", key_kind="ed25519", key_slot=2),
            leaf=leaf_spec(key_kind="ed25519"),
        )

    @case
    def self_signed_leaf() -> Case:
        r = make(Spec("Corpus Root", key_slot=1))
        lf = make(leaf_spec(ca=False))
        return Case("self-signed leaf not in the bundle", (r.cert,), (lf.cert,))

    @case
    def self_signed_leaf_trusted() -> Case:
        lf = make(leaf_spec(ca=False))
        return Case("self-signed leaf that is itself in the bundle", (lf.cert,), (lf.cert,))

    @case
    def untrusted_root_served() -> Case:
        _r, i, lf = _three()
        other = make(Spec("Other Root", key_slot=4))
        return Case("served root not in the bundle", (other.cert,), (lf.cert, i.cert, _r.cert))

    @case
    def inter_not_ca() -> Case:
        return _std(
            "intermediate with basicConstraints CA:FALSE",
            inter=Spec("Corpus Issuing", ca=False, key_slot=2),
        )

    @case
    def inter_no_bc() -> Case:
        return _std(
            "intermediate without basicConstraints (keyCertSign only)",
            inter=Spec("Corpus Issuing", ca=None, key_slot=2),
        )

    @case
    def root_no_bc() -> Case:
        return _std(
            "root without basicConstraints (keyCertSign only)",
            root=Spec("Corpus Root", ca=None, key_slot=1),
        )

    @case
    def leaf_is_ca() -> Case:
        return _std("leaf is itself a CA certificate", leaf=leaf_spec(ca=True, ku=KU_CA))

    @case
    def wrong_signer() -> Case:
        r, i, _lf = _three()
        forged = make(leaf_spec(), Node(i.cert, key("ec256", 7)))
        return Case(
            "leaf signature does not match the intermediate key", (r.cert,), (forged.cert, i.cert)
        )

    return out


def corpus() -> list[Case]:
    return [build() for build in _cases()]
