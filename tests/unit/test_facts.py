from __future__ import annotations

import ipaddress
import subprocess
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from expressway_certd_lab.pki import CA, CLIENT_AUTH, SERVER_AUTH, key_pem

from expressway_certd.monitor.errors import CertParseError
from expressway_certd.monitor.facts import (
    SAN,
    diff_facts,
    load_certificates,
    parse_facts,
    pkcs7_certificates,
)
from tests.conftest import pem


def test_parses_step_a_facts(make_cert, lab_issuing):
    not_after = datetime(2031, 5, 17, 12, 0, tzinfo=UTC)
    sans = ["expe.example.com", "collab.example.com", "10.1.2.3"]
    cert = make_cert("expe.example.com", sans, not_after=not_after)
    facts = parse_facts(pem(cert))
    assert facts.common_name == "expe.example.com"
    assert "CN=expe.example.com" in facts.subject
    assert facts.issuer == lab_issuing.cert.subject.rfc4514_string()
    assert facts.not_after == not_after
    assert facts.not_after.tzinfo is not None
    assert facts.sans == (
        SAN("DNS", "expe.example.com"),
        SAN("DNS", "collab.example.com"),
        SAN("IP", "10.1.2.3"),
    )
    assert facts.dns_names == ("expe.example.com", "collab.example.com")
    assert facts.eku == (SERVER_AUTH.dotted_string, CLIENT_AUTH.dotted_string)
    assert facts.eku_names() == ("TLS Web Server Authentication", "TLS Web Client Authentication")
    assert facts.key_usage == ("Digital Signature", "Key Encipherment")
    assert facts.key_type == "EC" and facts.key_size == 256
    assert facts.sha256 == cert.fingerprint(hashes.SHA256()).hex()
    assert facts.serial == format(cert.serial_number, "X")
    ski = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest.hex()
    assert facts.ski == ski
    issuer_ski = x509.SubjectKeyIdentifier.from_public_key(lab_issuing.key.public_key())
    assert facts.aki == issuer_ski.digest.hex()
    assert facts.signature_algorithm == "ecdsa-with-SHA256"
    assert not facts.is_ca


def test_der_and_pem_give_the_same_facts(make_cert):
    cert = make_cert()
    der = cert.public_bytes(serialization.Encoding.DER)
    assert parse_facts(der) == parse_facts(pem(cert))


def test_rsa_key_and_ca_flag(lab_root):
    cert, _ = lab_root.issue("rsa.example.com", key_kind="rsa", key_size=2048)
    facts = parse_facts(pem(cert))
    assert (facts.key_type, facts.key_size) == ("RSA", 2048)
    assert parse_facts(pem(lab_root.cert)).is_ca


def _bare_cert(extensions: list[x509.ExtensionType]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bare")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(key, hashes.SHA256())


def test_certificate_without_extensions_is_not_an_error():
    facts = parse_facts(pem(_bare_cert([])))
    assert facts.sans == () and facts.eku == () and facts.key_usage == ()
    assert facts.aki is None and facts.ski is None
    assert facts.self_signed


def test_odd_san_types():
    cert = _bare_cert(
        [
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier("sip:expe@example.com"),
                    x509.RFC822Name("pki@example.com"),
                    x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
                ]
            ),
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CODE_SIGNING, x509.ObjectIdentifier("1.2.3.4")]
            ),
        ]
    )
    facts = parse_facts(pem(cert))
    assert [str(s) for s in facts.sans] == [
        "URI:sip:expe@example.com",
        "email:pki@example.com",
        "IP:2001:db8::1",
    ]
    assert "Code Signing" in facts.eku_names() and "1.2.3.4" in facts.eku_names()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty input"),
        (b"   \n", "empty input"),
        (b"this is not a certificate", "not a readable X.509 certificate"),
        (b"\x30\x82\x01\x00garbage", "not a readable X.509 certificate"),
        (b"-----BEGIN CERTIFICATE-----\nMIIB\n", "truncated"),
        (b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "not a readable"),
    ],
)
def test_garbage_gives_a_clear_error(data, message):
    with pytest.raises(CertParseError, match=message) as info:
        parse_facts(data, source="upload.pem")
    assert str(info.value).startswith("upload.pem:")


def test_truncated_der_is_a_clear_error(make_cert):
    der = make_cert().public_bytes(serialization.Encoding.DER)
    with pytest.raises(CertParseError, match=r"not a readable X\.509"):
        parse_facts(der[: len(der) // 2])


def test_private_key_pem_is_named():
    data = key_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(CertParseError, match="'PRIVATE KEY', expected 'CERTIFICATE'"):
        parse_facts(data)


def test_bundle_loads_in_order(make_cert, lab_issuing, lab_root):
    leaf = make_cert("a.example.com")
    certs = load_certificates(pem(leaf) + pem(lab_issuing.cert) + pem(lab_root.cert))
    assert [c.subject for c in certs] == [
        leaf.subject,
        lab_issuing.cert.subject,
        lab_root.cert.subject,
    ]
    with pytest.raises(CertParseError, match="certificate #2"):
        load_certificates(
            pem(leaf) + b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )


def test_diff_reports_sans_eku_and_aki(make_cert):
    other_ca = CA.create("Other CA")
    old = parse_facts(pem(make_cert("e.example.com", ["e.example.com", "old.example.com"])))
    new = parse_facts(
        pem(
            make_cert(
                "e.example.com",
                ["e.example.com", "new.example.com"],
                eku=[SERVER_AUTH],
                ca=other_ca,
            )
        )
    )
    diff = diff_facts(old, new)
    assert diff.sans_added == (SAN("DNS", "new.example.com"),)
    assert diff.sans_removed == (SAN("DNS", "old.example.com"),)
    assert diff.eku_removed == (CLIENT_AUTH.dotted_string,) and diff.eku_added == ()
    assert diff.aki_changed and diff.issuer_changed and diff.key_changed and diff.cert_changed
    assert diff.sans_changed and diff.eku_changed


def test_diff_of_a_renewal_from_the_same_ca(make_cert):
    old = parse_facts(pem(make_cert("e.example.com", ["e.example.com"])))
    new = parse_facts(pem(make_cert("e.example.com", ["e.example.com"])))
    diff = diff_facts(old, new)
    assert diff.cert_changed and not diff.aki_changed and not diff.sans_changed
    assert not diff.eku_changed and not diff.issuer_changed
    same = diff_facts(old, old)
    assert not same.cert_changed and not same.key_changed


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1), (2, 1, 0)])
def test_pkcs7_bag_as_openssl_writes_it_is_read_in_its_order_without_the_ber_fallback(
    order: tuple[int, ...], tmp_path: Path
) -> None:
    """Debian's `openssl crl2pkcs7` writes the SET of certificates in its input's order (as
    libest and other OpenSSL-based CAs do); cryptography reads such a bag only through a
    deprecated BER fallback that warns it "may become an exception". Read it without."""
    root = CA.create("Bag Root")
    issuing = CA.create("Bag Issuing", parent=root)
    leaf, _ = issuing.issue("bag.example.com", key_kind="ec", key_size=256)
    certs = [[leaf, issuing.cert, root.cert][i] for i in order]
    bundle = tmp_path / "certs.pem"
    bundle.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    bag = subprocess.run(
        ["openssl", "crl2pkcs7", "-nocrl", "-certfile", str(bundle), "-outform", "DER"],
        capture_output=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pkcs7_certificates(bag) == certs


def test_pkcs7_reader_refuses_what_is_not_a_certificate_bag() -> None:
    for data in (b"", b"\x30\x03\x02\x01\x01", b"\x30\x82\xff\xff", b"not der"):
        with pytest.raises(ValueError):
            pkcs7_certificates(data)
