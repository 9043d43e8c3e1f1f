"""The EST connector (renewers/ca/est.py, as the pipeline calls it: submit, poll, ca_chain,
csr_attributes, check) against Cisco's libest 3.2.0 `estserver` (Debian's source package
3.2.0+ds-1.1, built by scripts/build-libest.sh), not against our simulator. The real server
is the oracle: what it answers is what the connector must handle.

Every libest server here caps TLS at 1.2 (est_server_http.c sets max_proto_version), so every
test is also the TLS 1.2-only case.
"""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from expressway_certd.monitor.config import Secret
from expressway_certd.monitor.durations import utcnow
from expressway_certd.monitor.errors import CAError
from expressway_certd.renewers.ca.base import CARequestError, Issued, Pending
from expressway_certd.renewers.ca.est import ESTConnector
from expressway_certd.renewers.ca.est_config import ESTConfig
from expressway_certd.renewers.ca.httpclient import basic_auth
from tests.integration.ca_servers import make_csr
from tests.integration.libest import (
    CMC_RA_OID,
    PASSWORD,
    USER,
    LibESTCA,
    LibESTServer,
    libest_ca,
)

pytestmark = pytest.mark.integration
__all__ = ["libest_ca"]  # the module-scoped `libest` fixture


@pytest.fixture(scope="module")
def server(libest: LibESTCA) -> Iterator[LibESTServer]:
    """estserver as the example's runserver.sh starts it: HTTP Basic (estuser / estpwd)."""
    with libest.serve() as running:
        yield running


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTD_LIBEST_PASSWORD", PASSWORD)
    monkeypatch.setenv("CERTD_LIBEST_WRONG", "not-" + PASSWORD)


def connector(
    libest: LibESTCA, server: LibESTServer, *, credentials: bool = True, **changes: object
) -> ESTConnector:
    fields: dict[str, object] = {"name": "libest", "url": server.url,
                                 "trust_anchor": libest.cacert}  # fmt: skip
    if credentials:  # username + password (HTTP Basic unless http_auth says otherwise)
        fields.update(username=USER, password=Secret("env:CERTD_LIBEST_PASSWORD"))
    fields.update(changes)
    return ESTConnector(ESTConfig(**fields))  # type: ignore[arg-type]


def expressway_csr(*names: str) -> x509.CertificateSigningRequest:
    """A CSR as an Expressway makes it by default: RSA 4096, CN + O, every name in the SAN."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    subject = x509.Name(
        [
            x509.NameAttribute(x509.NameOID.COMMON_NAME, names[0]),
            x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Example"),
        ]
    )
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def big_csr() -> x509.CertificateSigningRequest:
    return expressway_csr("expe.example.com", "expe-alt.example.com")


async def test_cacerts_is_the_servers_ca(libest: LibESTCA, server: LibESTServer) -> None:
    conn = connector(libest, server)
    chain = await conn.ca_chain()
    assert [c.fingerprint(hashes.SHA256()) for c in chain] == [
        x509.load_pem_x509_certificate(libest.cacert.read_bytes()).fingerprint(hashes.SHA256())
    ]
    await conn.aclose()


async def test_rsa4096_expressway_csr_is_issued_and_what_the_ca_dropped_is_named(
    libest: LibESTCA, server: LibESTServer, big_csr: x509.CertificateSigningRequest
) -> None:
    # The issue's original failure: a 4096-bit CSR in one base64 line got HTTP 400.
    before = libest.issued()
    conn = connector(libest, server)
    issued = await conn.submit(big_csr)
    assert isinstance(issued, Issued)
    assert issued.leaf.public_key() == big_csr.public_key()
    assert format(issued.leaf.serial_number, "02X") in libest.issued()[len(before) :]
    # estExampleCA.cnf: copy_extensions = none, policy_any keeps CN only.
    with pytest.raises(x509.ExtensionNotFound):
        issued.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert issued.dropped is not None
    assert issued.dropped.sans == ("DNS:expe.example.com", "DNS:expe-alt.example.com")
    assert issued.dropped.subject == ("O=Example",)
    assert issued.dropped.breaks_service
    assert [c.subject for c in issued.chain] == [issued.leaf.issuer]
    await conn.aclose()


async def test_one_long_base64_line_is_what_libest_refuses(
    libest: LibESTCA, server: LibESTServer, big_csr: x509.CertificateSigningRequest
) -> None:
    # What the connector sent before: the same CSR unwrapped. libest's BIO_f_base64 reads
    # nothing from it. This pins the failure on the server, not on our simulator.
    der = big_csr.public_bytes(serialization.Encoding.DER)
    context = ssl.create_default_context(cafile=str(libest.cacert))
    headers = {
        "Authorization": basic_auth(USER, PASSWORD),
        "Content-Type": "application/pkcs10",
        "Content-Transfer-Encoding": "base64",
    }
    url = f"{server.url}/simpleenroll"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=base64.b64encode(der), headers=headers, ssl=context) as resp,
    ):
        assert resp.status == 400
        assert "Invalid or corrupted pkcs10 request." in await resp.text()


async def test_wrong_password_is_the_connectors_auth_error(
    libest: LibESTCA, server: LibESTServer
) -> None:
    conn = connector(libest, server, password=Secret("env:CERTD_LIBEST_WRONG"))
    with pytest.raises(CARequestError) as info:
        await conn.submit(make_csr("expe.example.com"))
    message = str(info.value)
    assert info.value.reason == "auth"
    assert message.startswith("CA 'libest': simpleenroll: the EST server refused our credentials")
    assert "check username/password" in message
    assert "not-" + PASSWORD not in message
    checks = {c.step: c for c in await conn.check()}
    assert not checks["auth"].ok
    await conn.aclose()


async def test_check_reports_cacerts_csrattrs_and_accepted_credentials(
    libest: LibESTCA, server: LibESTServer
) -> None:
    conn = connector(libest, server)
    checks = {c.step: c for c in await conn.check()}
    assert all(c.ok for c in checks.values()), checks
    assert checks["cacerts"].detail == "1 CA certificate(s): CN=estExampleCA"
    await conn.aclose()


async def test_csrattrs_of_the_example_server_are_read(
    libest: LibESTCA, server: LibESTServer
) -> None:
    # estserver.c answers its built-in TEST_CSR with sizeof(): the body ends in a NUL byte.
    conn = connector(libest, server)
    assert await conn.csr_attributes() == [
        "macAddress",
        "emailAddress",
        "secp384r1",
        "sha384",
    ]
    await conn.aclose()


async def test_server_is_tls12_only_and_the_connector_works_with_it(
    libest: LibESTCA, server: LibESTServer
) -> None:
    context = ssl.create_default_context(cafile=str(libest.cacert))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            await session.get(f"{server.url}/cacerts", ssl=context)
    conn = connector(libest, server)
    assert isinstance(await conn.submit(make_csr("tls12.example.com")), Issued)
    await conn.aclose()


async def test_manual_enrollment_honours_retry_after_then_issues_once(libest: LibESTCA) -> None:
    # -m: the first request for a CSR is answered 202 + Retry-After (libest's minimum is 60 s;
    # a smaller -m leaves its default, 3600), the same CSR sent again is enrolled.
    # 90, not 60: the connector's own default when Retry-After is missing is 60.
    with libest.serve("-m", "90") as manual:
        conn = connector(libest, manual)
        before = libest.issued()
        pending = await conn.submit(make_csr("manual.example.com"))
        assert isinstance(pending, Pending)
        wait = (pending.retry_at - utcnow()).total_seconds()
        assert 80 < wait <= 90
        assert libest.issued() == before
        issued = await conn.poll(pending.handle)
        assert isinstance(issued, Issued)
        assert libest.issued() == [*before, format(issued.leaf.serial_number, "02X")]
        await conn.aclose()


async def test_tls_client_certificate_auth_without_http_auth(libest: LibESTCA) -> None:
    cert, key = libest.client_certificate("certd-ra", ["clientAuth"])
    with libest.serve("-n") as cert_only:
        conn = connector(libest, cert_only, credentials=False, client_cert=cert, client_key=key)
        assert isinstance(await conn.submit(make_csr("ra.example.com")), Issued)
        assert "TLS: client certificate is valid" in cert_only.log.read_text(errors="replace")
        no_cert = connector(libest, cert_only)
        with pytest.raises(CARequestError) as info:
            await no_cert.submit(make_csr("ra.example.com"))
        assert info.value.reason == "auth"
        await conn.aclose()
        await no_cert.aclose()


async def test_http_auth_is_still_wanted_with_a_client_certificate(
    libest: LibESTCA, server: LibESTServer
) -> None:
    # Without -o, a verified client certificate alone is not enough: the connector says to
    # add username + password, and with both the request is enrolled.
    cert, key = libest.client_certificate("certd-ra-basic", ["clientAuth"])
    cert_only = connector(libest, server, credentials=False, client_cert=cert, client_key=key)
    with pytest.raises(CAError, match=r"HTTP 401; it asks for Basic.*add username \+ password"):
        await cert_only.submit(make_csr("both.example.com"))
    both = connector(libest, server, client_cert=cert, client_key=key)
    assert isinstance(await both.submit(make_csr("both.example.com")), Issued)
    await cert_only.aclose()
    await both.aclose()


async def test_pop_server_needs_an_ra_certificate_and_says_so(libest: LibESTCA) -> None:
    # -t: the CSR must carry the TLS tls-unique value, which an Expressway CSR cannot; an RA
    # certificate (id-kp-cmcRA) is exempt (est_server.c est_check_cmcRA). libest answers 401
    # "Proof of Possession Mismatch.", not 400: the connector must not blame the password.
    ra_cert, ra_key = libest.client_certificate("certd-cmcra", ["clientAuth", CMC_RA_OID])
    plain_cert, plain_key = libest.client_certificate("certd-plain", ["clientAuth"])
    with libest.serve("-t") as pop:
        basic_only = connector(libest, pop)
        with pytest.raises(CARequestError) as info:
            await basic_only.submit(make_csr("pop.example.com"))
        message = str(info.value)
        assert info.value.reason == "auth"
        assert 'refused the CSR ("Proof of Possession Mismatch.") (HTTP 401)' in message
        assert "id-kp-cmcRA" in message
        assert "check username/password" not in message
        plain = connector(libest, pop, client_cert=plain_cert, client_key=plain_key)
        with pytest.raises(CARequestError, match="id-kp-cmcRA"):
            await plain.submit(make_csr("pop.example.com"))
        ra = connector(libest, pop, client_cert=ra_cert, client_key=ra_key)
        assert isinstance(await ra.submit(make_csr("pop.example.com")), Issued)
        for conn in (basic_only, plain, ra):
            await conn.aclose()


async def test_enforced_csr_attributes_refusal_points_at_csrattrs(libest: LibESTCA) -> None:
    # --enforce-csr: a CSR without every attribute /csrattrs lists is refused with 400
    # "CSR Attributes missing in request." (est_locl.h EST_BODY_MISSING_CSR_ATTR).
    with libest.serve("--enforce-csr") as enforcing:
        conn = connector(libest, enforcing)
        with pytest.raises(CARequestError) as info:
            await conn.submit(make_csr("attrs.example.com"))
        message = str(info.value)
        assert "CSR Attributes missing in request." in message
        assert "csrattrs" in message and "ca-check" in message
        assert "proof-of-possession" not in message
        await conn.aclose()


SAN_ONLY = bytes.fromhex("30050603551d11")  # CsrAttrs: SEQUENCE { subjectAltName }
KEY_USAGE_ONLY = bytes.fromhex("30050603551d0f")  # CsrAttrs: SEQUENCE { keyUsage }


@pytest.mark.parametrize(
    ("attrs", "oid", "enrolled"),
    [(SAN_ONLY, "2.5.29.17", True), (KEY_USAGE_ONLY, "2.5.29.15", False)],
    ids=["san", "key-usage"],
)
async def test_enforced_csr_attributes_are_oids_the_csr_must_contain(
    libest: LibESTCA, attrs: bytes, oid: str, enrolled: bool
) -> None:
    # What libest enforces (est_server_all_csrattrs_present): every OID of /csrattrs appears
    # somewhere in the CSR. An Expressway CSR has a SAN extension but no keyUsage request.
    # The lab simulator's `enforce_csr_attrs` follows what this shows.
    with libest.serve("--enforce-csr", csr_attrs=attrs) as enforcing:
        conn = connector(libest, enforcing)
        assert await conn.csr_attributes() == [oid]
        if enrolled:
            assert isinstance(await conn.submit(make_csr("attrs.example.com")), Issued)
        else:
            with pytest.raises(CARequestError, match=r"CSR Attributes missing in request\."):
                await conn.submit(make_csr("attrs.example.com"))
        await conn.aclose()


async def test_client_certificate_alone_where_http_auth_is_optional(libest: LibESTCA) -> None:
    # -o: HTTP auth is skipped when TLS client auth succeeds; Basic alone still works.
    cert, key = libest.client_certificate("certd-ra-optional", ["clientAuth"])
    with libest.serve("-o") as optional:
        cert_only = connector(libest, optional, credentials=False, client_cert=cert, client_key=key)
        basic_only = connector(libest, optional)
        for conn in (cert_only, basic_only):
            assert isinstance(await conn.submit(make_csr("optional.example.com")), Issued)
            await conn.aclose()


async def test_simplereenroll_with_basic_auth(libest: LibESTCA, server: LibESTServer) -> None:
    conn = connector(libest, server, operation="simplereenroll")
    issued = await conn.submit(make_csr("reenroll.example.com"))
    assert isinstance(issued, Issued)
    assert "/.well-known/est/simplereenroll" in server.log.read_text(errors="replace")
    await conn.aclose()


async def test_a_label_on_debians_build_is_the_connectors_label_error(
    libest: LibESTCA, server: LibESTServer
) -> None:
    # Debian builds libest without liburiparser: no path segments, 404 for any label.
    conn = connector(libest, server, url=server.url + "/expressway")
    with pytest.raises(CARequestError) as info:
        await conn.ca_chain()
    assert info.value.reason == "not_found"
    assert "check the url and the EST label" in str(info.value)
    await conn.aclose()


def test_sign_names_the_sans_libests_example_ca_dropped(
    libest: LibESTCA, server: LibESTServer, tmp_path: Path
) -> None:
    # The issue's "done when": `sign` against an EST server that drops SANs exits non-zero
    # naming them. The example CA copies no extension from the CSR.
    config = tmp_path / "certd.toml"
    config.write_text(
        f'[daemon]\ndata_dir = "{tmp_path}"\n\n[ca.libest]\nkind = "est"\n'
        f'url = "{server.url}"\ntrust_anchor = "{libest.cacert}"\n'
        f'username = "{USER}"\npassword = "env:CERTD_LIBEST_PASSWORD"\n'
    )
    csr_file = tmp_path / "expe.csr"
    csr = expressway_csr("expe.example.com", "alt.example.com")
    csr_file.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    out = tmp_path / "expe.pem"
    done = subprocess.run(
        [sys.executable, "-m", "expressway_certd.cli", "sign", "--config", str(config),
         "--ca", "libest", "--csr", str(csr_file), "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "CERTD_LIBEST_PASSWORD": PASSWORD},
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert (
        "CA 'libest' dropped what the CSR asked for: "
        "SANs DNS:expe.example.com, DNS:alt.example.com" in done.stderr
    )
    assert PASSWORD not in done.stderr + done.stdout
    issued = x509.load_pem_x509_certificate(out.read_bytes())  # written anyway
    assert issued.public_key() == csr.public_key()


async def test_http_digest_server(libest: LibESTCA) -> None:
    # estserver -h: HTTP Digest (RFC 7616, MD5, qop=auth) with realm estrealm. Basic gets a
    # bare 401 whose fix names http_auth = "digest"; with it the request is enrolled.
    with libest.serve("-h") as digest:
        basic = connector(libest, digest)
        with pytest.raises(CARequestError) as info:
            await basic.submit(make_csr("digest.example.com"))
        assert info.value.reason == "auth"
        assert 'set http_auth = "digest"' in str(info.value)
        right = connector(libest, digest, http_auth="digest")
        assert isinstance(await right.submit(make_csr("digest.example.com")), Issued)
        assert all(c.ok for c in await right.check())
        wrong = connector(
            libest, digest, http_auth="digest", password=Secret("env:CERTD_LIBEST_WRONG")
        )
        with pytest.raises(CARequestError) as info:
            await wrong.submit(make_csr("digest.example.com"))
        assert info.value.reason == "auth"
        assert "not-" + PASSWORD not in str(info.value)
        assert 'set http_auth = "basic"' in str(info.value)
        for conn in (basic, right, wrong):
            await conn.aclose()
