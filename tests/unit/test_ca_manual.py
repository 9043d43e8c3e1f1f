"""The manual connector's `accept`: what an operator hands in is checked against the CSR's key
and compared with the CSR like any CA's answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from expressway_certd_lab.pki import CA

from expressway_certd.renewers.ca.base import CARequestError, Pending
from expressway_certd.renewers.ca.manual import ManualConnector
from expressway_certd.renewers.ca.manual_config import ManualConfig


def _csr(key: ec.EllipticCurvePrivateKey, *names: str) -> x509.CertificateSigningRequest:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )


def _pending(
    tmp_path: Path, csr: x509.CertificateSigningRequest
) -> tuple[ManualConnector, Pending]:
    conn = ManualConnector(ManualConfig("portal", csr_dir=tmp_path / "csrs"), data_dir=tmp_path)
    result = asyncio.run(conn.submit(csr))
    assert isinstance(result, Pending)
    return conn, result


def test_a_certificate_missing_a_san_is_accepted_with_the_san_named(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    conn, pending = _pending(tmp_path, _csr(key, "a.example.com", "b.example.com"))
    portal = CA.create("Portal CA")
    leaf, _ = portal.issue("a.example.com", ["a.example.com"], public_key=key.public_key())
    issued = conn.accept(pending.handle, leaf, [portal.cert])
    assert issued.chain == (portal.cert,)
    assert issued.dropped is not None and issued.dropped.sans == ("DNS:b.example.com",)


def test_the_csr_file_is_read_when_an_old_handle_has_no_csr(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    conn, pending = _pending(tmp_path, _csr(key, "a.example.com", "b.example.com"))
    old = {k: v for k, v in pending.handle.items() if k != "csr"}
    portal = CA.create("Portal CA")
    leaf, _ = portal.issue("a.example.com", ["a.example.com"], public_key=key.public_key())
    assert conn.accept(old, leaf).dropped.sans == ("DNS:b.example.com",)  # type: ignore[union-attr]


def test_a_certificate_for_another_key_is_refused(tmp_path: Path) -> None:
    conn, pending = _pending(
        tmp_path, _csr(ec.generate_private_key(ec.SECP256R1()), "a.example.com")
    )
    portal = CA.create("Portal CA")
    stranger, _ = portal.issue("a.example.com", ["a.example.com"])
    with pytest.raises(
        CARequestError, match=r"CA 'portal': provide: no certificate .* is for the CSR's key"
    ) as info:
        conn.accept(pending.handle, stranger)
    assert info.value.reason == "wrong_key"
