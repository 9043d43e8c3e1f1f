"""`decode` against the oracle: every line we print must be a line Debian's openssl prints."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from expressway_certd_lab.pki import CA, CLIENT_AUTH, SERVER_AUTH, new_key

from expressway_certd.monitor.errors import CertParseError
from expressway_certd.monitor.text import printable
from expressway_certd.renewers.decode import certificate_text, csr_text, read_file_bytes, render
from tests.helpers import need_binary

NOW = datetime.now(UTC)


def openssl(*args: str, data: bytes) -> list[str]:
    binary = need_binary("openssl")
    out = subprocess.run([binary, *args], input=data, capture_output=True, check=True)
    return [line.strip() for line in out.stdout.decode().splitlines()]


@pytest.fixture(scope="module")
def issuing() -> CA:
    return CA.create("Decode Issuing", parent=CA.create("Decode Root"))


@pytest.mark.parametrize(
    ("kind", "size", "eku"),
    [("rsa", 2048, [SERVER_AUTH, CLIENT_AUTH]), ("ec", 256, [SERVER_AUTH]), ("ec", 384, None)],
)
def test_certificate_lines_are_openssls(issuing, kind, size, eku):
    cert, _ = issuing.issue(
        "expe-e1.lab.example",
        ["expe-e1.lab.example", "collab-edge.lab.example", "192.0.2.7"],
        key_kind=kind,
        key_size=size,
        eku=eku,
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    oracle = set(openssl("x509", "-text", "-noout", data=pem))
    ours = [line.strip() for line in certificate_text(cert)]
    assert [line for line in ours if line not in oracle] == []
    assert "DNS:expe-e1.lab.example, DNS:collab-edge.lab.example, IP Address:192.0.2.7" in ours


def test_ca_certificate_and_serial_forms(issuing):
    pem = issuing.cert.public_bytes(serialization.Encoding.PEM)
    oracle = set(openssl("x509", "-text", "-noout", data=pem))
    ours = [line.strip() for line in certificate_text(issuing.cert)]
    assert [line for line in ours if line not in oracle] == []
    assert "CA:TRUE" in ours
    small = (
        x509.CertificateBuilder()
        .subject_name(issuing.cert.subject)
        .issuer_name(issuing.cert.subject)
        .public_key(issuing.key.public_key())
        .serial_number(4660)
        .not_valid_before(issuing.cert.not_valid_before_utc)
        .not_valid_after(issuing.cert.not_valid_after_utc)
        .sign(issuing.key, hashes.SHA256())
    )
    oracle = set(
        openssl("x509", "-text", "-noout", data=small.public_bytes(serialization.Encoding.PEM))
    )
    assert "Serial Number: 4660 (0x1234)" in oracle
    assert [
        line for line in (s.strip() for s in certificate_text(small)) if line not in oracle
    ] == []


def make_csr(sans: list[str]) -> x509.CertificateSigningRequest:
    key = new_key("rsa", 2048)
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "NO"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
                    x509.NameAttribute(NameOID.COMMON_NAME, sans[0]),
                ]
            )
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), False)
        .sign(key, hashes.SHA256())
    )


def test_csr_lines_are_openssls():
    csr = make_csr(["expe-c1.lab.example", "expressway-c.lab.example"])
    pem = csr.public_bytes(serialization.Encoding.PEM)
    oracle = set(openssl("req", "-text", "-noout", data=pem))
    ours = [line.strip() for line in csr_text(csr)]
    assert ours[-1] == "Signature valid: yes"  # ours only: openssl prints the raw signature
    assert [line for line in ours[:-1] if line not in oracle] == []
    assert "Subject: C = NO, O = Example, CN = expe-c1.lab.example" in ours


def test_file_kinds_pem_der_pkcs7_chain(issuing, tmp_path: Path):
    leaf, _ = issuing.issue("a.lab.example", ["a.lab.example"], key_kind="ec", key_size=256)
    chain = [leaf, *issuing.chain()]
    pem_chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    assert read_file_bytes(pem_chain, source="x").kind == "chain"
    der = leaf.public_bytes(serialization.Encoding.DER)
    assert read_file_bytes(der, source="x").certificates == (leaf,)
    p7_der = pkcs7.serialize_certificates(chain, serialization.Encoding.DER)
    p7_pem = pkcs7.serialize_certificates(chain, serialization.Encoding.PEM)
    for blob in (p7_der, p7_pem):
        decoded = read_file_bytes(blob, source="x")
        assert decoded.kind == "pkcs7"
        assert set(decoded.certificates) == set(chain)
    csr = make_csr(["b.lab.example"])
    assert read_file_bytes(csr.public_bytes(serialization.Encoding.DER), source="x").kind == "csr"
    text = render(read_file_bytes(pem_chain, source="x"), NOW)
    assert "#1 signed by #2" in text
    assert "#2 signed by #3" in text
    assert "#3 is a self-signed root" in text
    broken = render(
        read_file_bytes(
            pem_chain.split(b"-----END CERTIFICATE-----\n", 1)[0]
            + b"-----END CERTIFICATE-----\n"
            + issuing.root().cert.public_bytes(serialization.Encoding.PEM),
            source="x",
        ),
        NOW,
    )
    assert "#1 NOT signed by #2" in broken


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "never reads private keys",
        ),
        (b"-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n", "'FOO' is not a certificate"),
        (b"\x30\x03\x02\x01\x00", "neither PEM nor a DER"),
        # PKCS#7 of content type "data" (cryptography raises UnsupportedAlgorithm for it)
        (bytes.fromhex("300b06092a864886f70d010701"), "neither PEM nor a DER"),
        (
            b"-----BEGIN PKCS7-----\nMAsGCSqGSIb3DQEHAQ==\n-----END PKCS7-----\n",
            "not a readable PKCS#7",
        ),
    ],
)
def test_unreadable_input_names_the_file(data, message):
    with pytest.raises(CertParseError, match=message) as info:
        read_file_bytes(data, source="upload.pem")
    assert str(info.value).startswith("upload.pem")


def test_hostile_subject_is_escaped(issuing):
    hostile = "evil\x1b[2J\nCN = forged\u202e"
    cert, _ = issuing.issue(hostile, ["ok.lab.example"], key_kind="ec", key_size=256)
    text = render(read_file_bytes(cert.public_bytes(serialization.Encoding.PEM), source="x"), NOW)
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert "evil\\x1b[2J\\x0aCN = forged\\u202e" in text
    assert all("CN = forged" not in line or "evil" in line for line in text.splitlines())


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text", "plain text"),
        ("tab\there", "tab\\x09here"),
        ("bell\x07", "bell\\x07"),
        ("c1\x9b", "c1\\x9b"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("Ærøskøbing", "Ærøskøbing"),
    ],
)
def test_printable(raw, shown):
    assert printable(raw) == shown
