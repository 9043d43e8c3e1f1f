"""AD CS and EST specifics against the lab simulators over HTTPS: templates and their EKUs,
denials with the CA's disposition message, NTLM with and without Extended Protection, Basic,
the User-Agent quirk, every outcome in every page language; EST labels, client-certificate
(RA) auth, csrattrs, simplereenroll, and the libest behaviour the simulator reproduces
(line-oriented base64 via Debian's openssl, TLS 1.2 only, PoP, content types, dropped SANs),
including `sign` exiting non-zero when the CA drops SANs."""

from __future__ import annotations

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
from expressway_certd_lab.adcs import LANGUAGES, TEXT, ADCSSimulator
from expressway_certd_lab.est import CMC_RA, ESTSimulator
from expressway_certd_lab.pki import CA, CLIENT_AUTH, SERVER_AUTH, write_key_and_chain

from expressway_certd.config import load_config
from expressway_certd.monitor.config import Secret
from expressway_certd.monitor.durations import utcnow
from expressway_certd.monitor.errors import CAError, ConfigError
from expressway_certd.renewers.ca.adcs import ADCSConnector
from expressway_certd.renewers.ca.adcs_config import ADCSConfig
from expressway_certd.renewers.ca.base import CARequestError, Issued, Pending
from expressway_certd.renewers.ca.est import ESTConnector
from expressway_certd.renewers.ca.est_config import ESTConfig
from expressway_certd.renewers.ca.httpclient import basic_auth
from tests.integration.ca_servers import make_csr, scrambled, until_issued

pytestmark = pytest.mark.integration


@pytest.fixture
def adcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[ADCSSimulator]:
    monkeypatch.setenv("CERTD_ADCS_PASSWORD", "Adcs-Secret1")
    with ADCSSimulator(extended_protection=True) as sim:
        yield sim


def adcs_conn(
    sim: ADCSSimulator, template: str = "CollabServerClient", auth: str = "ntlm"
) -> ADCSConnector:
    return ADCSConnector(
        ADCSConfig(
            "corp-adcs", sim.url, template, auth=auth, trust_anchor=sim.trust_anchor,
            username="CORP\\certd", password=Secret("env:CERTD_ADCS_PASSWORD"),
        )
    )  # fmt: skip


def ekus(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


@pytest.mark.parametrize(
    ("template", "expected"),
    [("WebServer", {SERVER_AUTH}), ("CollabServerClient", {SERVER_AUTH, CLIENT_AUTH})],
)
async def test_template_decides_the_ekus(
    adcs: ADCSSimulator, template: str, expected: set[x509.ObjectIdentifier]
) -> None:
    conn = adcs_conn(adcs, template)
    issued = await conn.submit(make_csr("expe.example.com"))
    assert isinstance(issued, Issued)
    assert ekus(issued.leaf) == expected
    assert conn.capabilities().profile == template
    await conn.aclose()


async def test_unpublished_template_is_denied_with_the_disposition_message(
    adcs: ADCSSimulator,
) -> None:
    conn = adcs_conn(adcs, "WebServerr")
    with pytest.raises(CAError) as info:
        await conn.submit(make_csr("expe.example.com"))
    message = str(info.value)
    assert (
        "CA 'corp-adcs': submit: the CA denied the request: Denied by Policy Module 0x80094800"
        in message
    )
    assert "check the template name 'WebServerr'" in message
    await conn.aclose()


async def test_manager_denial_after_pending_is_reported_on_poll(adcs: ADCSSimulator) -> None:
    adcs.manager_approval = True
    conn = adcs_conn(adcs)
    pending = await conn.submit(make_csr("expe.example.com"))
    assert isinstance(pending, Pending)
    adcs.deny(pending.handle["req_id"], "Denied by CA manager: name not owned")
    with pytest.raises(
        CAError, match=r"retrieve: request \d+ was not issued: Denied by CA manager: name not owned"
    ):
        await conn.poll(pending.handle)
    await conn.aclose()


async def test_unknown_request_id(adcs: ADCSSimulator) -> None:
    conn = adcs_conn(adcs)
    handle = conn.new_handle(req_id=999, template="CollabServerClient")
    with pytest.raises(CAError, match="request 999 is not in the CA database"):
        await conn.poll(handle)
    await conn.aclose()


async def test_ntlm_sends_the_channel_binding_extended_protection_requires(
    adcs: ADCSSimulator,
) -> None:
    conn = adcs_conn(adcs, auth="ntlm")
    assert (await conn.check())[0].ok
    assert adcs.principals == ["CORP\\certd"]
    assert adcs.auth_errors == []
    await conn.aclose()


async def test_ntlm_bad_password_explains_md4_and_extended_protection(
    adcs: ADCSSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CERTD_ADCS_PASSWORD", "Wrong-Password9")
    conn = adcs_conn(adcs, auth="ntlm")
    with pytest.raises(CAError) as info:
        await conn.submit(make_csr("expe.example.com"))
    message = str(info.value)
    assert "refused ntlm authentication (HTTP 401" in message
    assert "MD4" in message and "Extended Protection" in message
    assert "Wrong-Password9" not in message
    await conn.aclose()


async def test_basic_auth_and_a_server_without_ntlm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTD_ADCS_PASSWORD", "Adcs-Secret1")
    with ADCSSimulator(auth=("basic",)) as sim:
        basic = adcs_conn(sim, auth="basic")
        assert isinstance(await basic.submit(make_csr("expe.example.com")), Issued)
        ntlm = adcs_conn(sim, auth="ntlm")
        with pytest.raises(CAError, match="the server does not offer NTLM"):
            await ntlm.submit(make_csr("expe.example.com"))
        await basic.aclose()
        await ntlm.aclose()


async def test_server_quirk_without_browser_agent_is_what_we_avoid(adcs: ADCSSimulator) -> None:
    conn = adcs_conn(adcs, auth="basic")
    issued = await conn.submit(make_csr("expe.example.com"))
    assert isinstance(issued, Issued)
    ctx = ssl.create_default_context(cafile=str(adcs.trust_anchor))
    async with aiohttp.ClientSession(headers={"User-Agent": "python-requests/2"}) as session:
        auth = basic_auth("CORP\\certd", "Adcs-Secret1")
        async with session.get(
            f"{adcs.url}/certnew.cer?ReqID=2&Enc=b64", ssl=ctx, headers={"Authorization": auth}
        ) as resp:
            assert resp.content_type == "text/html"  # what such servers do to scripts
    await conn.aclose()


# --- EST -------------------------------------------------------------------------------


@pytest.fixture
def est(monkeypatch: pytest.MonkeyPatch) -> Iterator[ESTSimulator]:
    monkeypatch.setenv("CERTD_EST_PASSWORD", "est-secret")
    with ESTSimulator() as sim:
        yield sim


def est_conn(sim: ESTSimulator, url: str | None = None, **changes: object) -> ESTConnector:
    fields: dict[str, object] = {
        "name": "lab-est", "url": url or sim.url, "trust_anchor": sim.trust_anchor,
        "username": "est", "password": Secret("env:CERTD_EST_PASSWORD"),
    }  # fmt: skip
    fields.update(changes)
    return ESTConnector(ESTConfig(**fields))  # type: ignore[arg-type]


async def test_est_label_and_unknown_label(est: ESTSimulator) -> None:
    conn = est_conn(est, est.url + "/expressway")
    assert isinstance(await conn.submit(make_csr("expe.example.com")), Issued)
    assert next(iter(est.requests.values())).label == "expressway"
    wrong = est_conn(est, est.url + "/nosuchlabel")
    with pytest.raises(
        CAError,
        match=r"CA 'lab-est': cacerts: .*/nosuchlabel/cacerts does not exist \(HTTP 404\); check the url and the EST label",
    ):
        await wrong.ca_chain()
    await conn.aclose()
    await wrong.aclose()


async def test_est_simplereenroll(est: ESTSimulator) -> None:
    conn = est_conn(est, operation="simplereenroll")
    assert isinstance(await conn.submit(make_csr("expe.example.com")), Issued)
    assert "simplereenroll" in est.hits
    await conn.aclose()


async def test_est_csrattrs(est: ESTSimulator) -> None:
    conn = est_conn(est)
    assert await conn.csr_attributes() == []
    est.csr_attrs_der = bytes.fromhex("300a06082a8648ce3d040303")
    assert await conn.csr_attributes() == ["ecdsa-with-SHA384"]
    await conn.aclose()


async def test_est_csrattrs_nul_terminated_as_libests_example_sends_them(
    est: ESTSimulator,
) -> None:
    est.csr_attrs_der, est.csr_attrs_nul = bytes.fromhex("300a06082a8648ce3d040303"), True
    conn = est_conn(est)
    assert await conn.csr_attributes() == ["ecdsa-with-SHA384"]
    await conn.aclose()


async def test_est_csrattrs_that_are_not_a_sequence_are_reported_not_hidden(
    est: ESTSimulator,
) -> None:
    est.csr_attrs_der = bytes.fromhex("06082a8648ce3d040303")  # an OID, not a SEQUENCE
    conn = est_conn(est)
    with pytest.raises(CARequestError) as info:
        await conn.csr_attributes()
    assert info.value.reason == "bad_response"
    assert str(info.value).startswith("CA 'lab-est': csrattrs: the answer is not a CsrAttrs")
    await conn.aclose()


async def test_est_enforced_csr_attributes_as_libest_enforces_them(est: ESTSimulator) -> None:
    # libest --enforce-csr: every OID of /csrattrs must appear in the CSR (test_est_libest.py).
    est.enforce_csr_attrs = True
    est.csr_attrs_der = bytes.fromhex("30050603551d11")  # subjectAltName: an Expressway CSR has it
    conn = est_conn(est)
    assert isinstance(await conn.submit(make_csr("expe.example.com")), Issued)
    est.csr_attrs_der = bytes.fromhex("30050603551d0f")  # keyUsage: it does not
    with pytest.raises(CARequestError) as info:
        await conn.submit(make_csr("expe.example.com"))
    assert "HTTP 400: CSR Attributes missing in request." in str(info.value)
    assert "ca-check" in str(info.value)
    await conn.aclose()


async def test_est_pending_uses_retry_after(est: ESTSimulator) -> None:
    est.manual_approval, est.retry_after = True, 120
    conn = est_conn(est)
    pending = await conn.submit(make_csr("expe.example.com"))
    assert isinstance(pending, Pending)
    wait = (pending.retry_at - utcnow()).total_seconds()
    assert 100 < wait <= 120
    est.approve_all()
    assert isinstance(await until_issued(conn, await conn.poll(pending.handle)), Issued)
    assert est.submissions == 1
    await conn.aclose()


async def test_est_tls_client_certificate_auth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_ca = CA.create("EST RA CA")
    leaf, key = client_ca.issue("certd-ra", eku=[CLIENT_AUTH], key_kind="ec", key_size=256)
    assert key is not None
    cert_file, key_file = write_key_and_chain(tmp_path, "ra", leaf, key, [])
    with ESTSimulator(client_ca=client_ca, http_auth=False) as sim:
        conn = est_conn(
            sim, username=None, password=None, client_cert=cert_file, client_key=key_file
        )
        assert isinstance(await conn.submit(make_csr("expe.example.com")), Issued)
        assert next(iter(sim.requests.values())).user.startswith("tls:")
        await conn.aclose()


async def test_est_cacerts_is_the_chain(est: ESTSimulator) -> None:
    conn = est_conn(est)
    chain = await conn.ca_chain()
    assert [c.subject for c in chain] == [est.issuing.cert.subject, est.root.cert.subject]
    await conn.aclose()


def rsa4096_csr(*names: str) -> x509.CertificateSigningRequest:
    """A CSR as an Expressway makes it by default: RSA 4096, CN + SANs."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(x509.NameOID.COMMON_NAME, names[0]),
                    x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Example"),
                ]
            )
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def big_csr() -> x509.CertificateSigningRequest:
    return rsa4096_csr("expe.example.com", "expe-alt.example.com")


async def test_est_rsa4096_csr_passes_a_line_oriented_base64_decoder(
    est: ESTSimulator, big_csr: x509.CertificateSigningRequest
) -> None:
    # The simulator decodes with `openssl base64 -d`, as libest's BIO_f_base64 does: one
    # unbroken line of ~2 kB decodes to nothing and the answer is 400.
    conn = est_conn(est)
    issued = await conn.submit(big_csr)
    assert isinstance(issued, Issued)
    assert issued.leaf.public_key() == big_csr.public_key()
    assert issued.dropped is not None and issued.dropped.breaks_service is False
    await conn.aclose()


async def test_est_enrollment_is_labelled_base64_as_rfc_7030_says(est: ESTSimulator) -> None:
    # RFC 7030 4.2.1: the PKCS#10 is carried with a Content-Transfer-Encoding of "base64";
    # the header says so on both simpleenroll and simplereenroll.
    conn = est_conn(est)
    assert isinstance(await conn.submit(make_csr("expe.example.com")), Issued)
    reenroll = est_conn(est, operation="simplereenroll")
    assert isinstance(await reenroll.submit(make_csr("expe.example.com")), Issued)
    assert est.enroll_headers == [("application/pkcs10", "base64")] * 2
    await conn.aclose()
    await reenroll.aclose()


async def test_est_tls12_only_server(
    big_csr: x509.CertificateSigningRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CERTD_EST_PASSWORD", "est-secret")
    with ESTSimulator(tls12_only=True) as sim:
        conn = est_conn(sim)
        assert isinstance(await conn.submit(big_csr), Issued)
        await conn.aclose()


def ra_certificate(
    tmp_path: Path, client_ca: CA, *, cmc_ra: bool, mode: int = 0o600
) -> tuple[Path, Path]:
    ekus = [CLIENT_AUTH, CMC_RA] if cmc_ra else [CLIENT_AUTH]
    leaf, key = client_ca.issue("certd-ra", eku=ekus, key_kind="ec", key_size=256)
    assert key is not None
    cert_file, key_file = write_key_and_chain(tmp_path, "ra", leaf, key, [])
    key_file.chmod(mode)
    return cert_file, key_file


async def test_est_ra_certificate_required_in_the_handshake_with_pop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CERTD_EST_PASSWORD", "est-secret")
    client_ca = CA.create("EST RA CA")
    cert_file, key_file = ra_certificate(tmp_path, client_ca, cmc_ra=True)
    with ESTSimulator(
        client_ca=client_ca, require_client_cert=True, http_auth=False, require_pop=True,
        tls12_only=True,
    ) as sim:  # fmt: skip
        ra = est_conn(sim, username=None, password=None, client_cert=cert_file,
                      client_key=key_file)  # fmt: skip
        assert isinstance(await ra.submit(make_csr("expe.example.com")), Issued)
        assert next(iter(sim.requests.values())).user == "tls:CN=certd-ra,O=expressway-certd lab"
        basic_only = est_conn(sim)
        with pytest.raises(CAError, match="client_cert"):
            await basic_only.submit(make_csr("expe.example.com"))
        await ra.aclose()
        await basic_only.aclose()


async def test_est_encrypted_ra_key_with_client_key_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_ca = CA.create("EST RA CA")
    leaf, key = client_ca.issue("certd-ra", eku=[CLIENT_AUTH, CMC_RA], key_kind="ec", key_size=256)
    assert key is not None
    cert_file, key_file = write_key_and_chain(tmp_path, "ra", leaf, key, [])
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"Ra-Key-Pass1"),
        )
    )
    with ESTSimulator(client_ca=client_ca, require_client_cert=True, http_auth=False) as sim:
        fields = {"username": None, "password": None, "client_cert": cert_file,
                  "client_key": key_file}  # fmt: skip
        with pytest.raises(CARequestError, match="client_key_password") as info:
            est_conn(sim, **fields)
        assert info.value.reason == "config"
        monkeypatch.setenv("CERTD_RA_KEY_PASSWORD", "Wrong-Pass2")
        with pytest.raises(CARequestError) as info:
            est_conn(sim, **fields, client_key_password=Secret("env:CERTD_RA_KEY_PASSWORD"))
        assert "Wrong-Pass2" not in str(info.value)
        monkeypatch.setenv("CERTD_RA_KEY_PASSWORD", "Ra-Key-Pass1")
        conn = est_conn(sim, **fields, client_key_password=Secret("env:CERTD_RA_KEY_PASSWORD"))
        assert isinstance(await conn.submit(make_csr("expe.example.com")), Issued)
        await conn.aclose()


async def test_est_pop_server_refusal_says_how_to_get_past_it(est: ESTSimulator) -> None:
    est.require_pop = True
    conn = est_conn(est)
    with pytest.raises(CARequestError) as info:
        await conn.submit(make_csr("expe.example.com"))
    message = str(info.value)
    # libest 3.2.0 answers 401 "Proof of Possession Mismatch." (test_est_libest.py).
    assert info.value.reason == "auth"
    assert 'refused the CSR ("Proof of Possession Mismatch.") (HTTP 401)' in message
    assert "id-kp-cmcRA" in message
    assert "check username/password" not in message
    await conn.aclose()


async def test_est_http_auth_server_wants_basic_even_with_a_client_cert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # libest with an HTTP auth callback answers 401 to a verified certificate without an
    # Authorization header (simpleenroll); the daemon can send both.
    monkeypatch.setenv("CERTD_EST_PASSWORD", "est-secret")
    client_ca = CA.create("EST RA CA")
    cert_file, key_file = ra_certificate(tmp_path, client_ca, cmc_ra=False)
    with ESTSimulator(client_ca=client_ca) as sim:
        cert_only = est_conn(sim, username=None, password=None, client_cert=cert_file,
                             client_key=key_file)  # fmt: skip
        with pytest.raises(CAError, match=r"HTTP 401; it asks for Basic.*add username \+ password"):
            await cert_only.submit(make_csr("expe.example.com"))
        both = est_conn(sim, client_cert=cert_file, client_key=key_file)
        assert isinstance(await both.submit(make_csr("expe.example.com")), Issued)
        await cert_only.aclose()
        await both.aclose()


@pytest.mark.parametrize(
    "content_type",
    [
        "application/pkcs7-mime; smime-type=certs-only",
        'application/pkcs7-mime; smime-type="certs-only"',
        "application/pkcs7-mime",
    ],
)
async def test_est_answer_content_types(est: ESTSimulator, content_type: str) -> None:
    est.content_type = content_type
    conn = est_conn(est)
    assert isinstance(await conn.submit(make_csr("expe.example.com")), Issued)
    await conn.aclose()


@pytest.mark.parametrize(
    "content_type",
    ["text/html; charset=utf-8", "application/pkcs7-mime; smime-type=enveloped-data"],
)
async def test_est_answer_that_is_not_a_certs_only_bag(
    est: ESTSimulator, content_type: str
) -> None:
    est.content_type = content_type
    conn = est_conn(est)
    with pytest.raises(CARequestError) as info:
        await conn.submit(make_csr("expe.example.com"))
    assert info.value.reason == "bad_response"
    assert content_type in str(info.value)
    await conn.aclose()


async def test_est_result_names_what_the_ca_dropped(est: ESTSimulator) -> None:
    est.drop_sans = True
    est.eku = [SERVER_AUTH]
    conn = est_conn(est)
    issued = await conn.submit(make_csr("expe.example.com", "alt1.example.com", "alt2.example.com"))
    assert isinstance(issued, Issued) and issued.dropped is not None
    assert issued.dropped.sans == ("DNS:alt1.example.com", "DNS:alt2.example.com")
    assert issued.dropped.breaks_service
    await conn.aclose()


def test_est_client_key_readable_by_others_is_refused(tmp_path: Path) -> None:

    client_ca = CA.create("EST RA CA")
    cert_file, key_file = ra_certificate(tmp_path, client_ca, cmc_ra=True, mode=0o644)
    config = tmp_path / "certd.toml"
    config.write_text(
        f'[daemon]\ndata_dir = "{tmp_path}"\n\n[ca.lab-est]\nkind = "est"\n'
        'url = "https://est.example.com/.well-known/est"\n'
        f'client_cert = "{cert_file}"\nclient_key = "{key_file}"\n'
        'client_key_password = "env:CERTD_RA_KEY_PASSWORD"\n'
    )
    with pytest.raises(ConfigError, match=r"client_key: .*mode 0644.*chmod 600"):
        load_config(config)
    key_file.chmod(0o600)
    parsed = load_config(config).cas["lab-est"]
    assert isinstance(parsed, ESTConfig)
    assert parsed.client_key == key_file
    assert parsed.client_key_password is not None
    assert parsed.client_key_password.ref == "env:CERTD_RA_KEY_PASSWORD"


def _sign(config: Path, csr_file: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "expressway_certd.cli", "sign", "--config", str(config), "--ca", "lab-est",
         "--csr", str(csr_file), "--out", str(out), *extra],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "CERTD_EST_PASSWORD": "est-secret"},
    )  # fmt: skip


def test_sign_exits_non_zero_naming_the_sans_the_ca_dropped(tmp_path: Path) -> None:
    with ESTSimulator(drop_sans=True) as sim:
        config = tmp_path / "certd.toml"
        config.write_text(
            f'[daemon]\ndata_dir = "{tmp_path}"\n\n[ca.lab-est]\nkind = "est"\n'
            f'url = "{sim.url}"\ntrust_anchor = "{sim.trust_anchor}"\n'
            'username = "est"\npassword = "env:CERTD_EST_PASSWORD"\n'
        )
        csr_file = tmp_path / "expe.csr"
        csr_file.write_bytes(
            make_csr("expe.example.com", "alt.example.com").public_bytes(serialization.Encoding.PEM)
        )
        out = tmp_path / "expe.pem"
        refused = _sign(config, csr_file, out)
        assert refused.returncode == 4, refused.stderr
        assert "dropped what the CSR asked for: SANs DNS:alt.example.com" in refused.stderr
        assert "--accept-changes" in refused.stderr
        assert x509.load_pem_x509_certificate(out.read_bytes())  # written anyway
        out.unlink()
        accepted = _sign(config, csr_file, out, "--accept-changes")
        assert accepted.returncode == 0, accepted.stderr
        assert "SANs DNS:alt.example.com" in accepted.stderr
        assert out.exists()


# --- AD CS in every page language ---------------------------------------------------


@pytest.fixture(params=[*LANGUAGES, "scrambled"])
def adcs_lang(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ADCSSimulator]:
    """The certsrv pages in each language, and in one whose every word is unknown: a
    connector that read any sentence would fail there."""
    monkeypatch.setenv("CERTD_ADCS_PASSWORD", "Adcs-Secret1")
    if request.param == "scrambled":
        monkeypatch.setitem(TEXT, "scrambled", {k: scrambled(v) for k, v in TEXT["en"].items()})
    with ADCSSimulator(auth=("basic",), language=request.param) as sim:
        yield sim


async def test_issued_in_every_language(adcs_lang: ADCSSimulator) -> None:
    conn = adcs_conn(adcs_lang, auth="basic")
    csr = make_csr("expe.example.com")
    issued = await conn.submit(csr)
    assert isinstance(issued, Issued) and issued.leaf.public_key() == csr.public_key()
    await conn.aclose()


async def test_pending_then_issued_in_every_language(adcs_lang: ADCSSimulator) -> None:
    adcs_lang.manager_approval = True
    conn = adcs_conn(adcs_lang, auth="basic")
    csr = make_csr("expe.example.com", "alt.example.com")
    pending = await conn.submit(csr)
    assert isinstance(pending, Pending)
    req_id = pending.handle["req_id"]
    assert req_id in adcs_lang.requests
    still = await conn.poll(pending.handle)
    assert isinstance(still, Pending) and still.handle["req_id"] == req_id
    adcs_lang.issue(req_id)
    issued = await conn.poll(pending.handle)
    assert isinstance(issued, Issued) and issued.leaf.public_key() == csr.public_key()
    assert issued.dropped is not None and not issued.dropped.breaks_service
    assert conn.request_count("submit") == 1
    await conn.aclose()


async def test_denied_at_submit_in_every_language(adcs_lang: ADCSSimulator) -> None:
    conn = adcs_conn(adcs_lang, "WebServerr", auth="basic")
    with pytest.raises(CARequestError) as info:
        await conn.submit(make_csr("expe.example.com"))
    assert info.value.reason == "denied"
    assert "0x80094800" in str(info.value) and "WebServerr" in str(info.value)
    assert "check the template name 'WebServerr'" in str(info.value)
    await conn.aclose()


async def test_pending_then_denied_in_every_language(adcs_lang: ADCSSimulator) -> None:
    adcs_lang.manager_approval = True
    conn = adcs_conn(adcs_lang, auth="basic")
    pending = await conn.submit(make_csr("expe.example.com"))
    assert isinstance(pending, Pending)
    adcs_lang.deny(pending.handle["req_id"], "CA manager: name not owned")
    with pytest.raises(CARequestError, match="was not issued: CA manager: name not owned") as info:
        await conn.poll(pending.handle)
    assert info.value.reason == "denied"
    await conn.aclose()


async def test_error_pages_in_every_language(adcs_lang: ADCSSimulator) -> None:
    adcs_lang.reject_requests = True
    conn = adcs_conn(adcs_lang, auth="basic")
    with pytest.raises(
        CARequestError, match=r"could not process the request: .*0x8009310b"
    ) as info:
        await conn.submit(make_csr("expe.example.com"))
    assert info.value.reason == "refused"
    gone = conn.new_handle(req_id=999, template="CollabServerClient")
    with pytest.raises(CARequestError, match="request 999 is not in the CA database") as info:
        await conn.poll(gone)
    assert info.value.reason == "not_found"
    await conn.aclose()


async def test_simulator_follows_accept_language(adcs: ADCSSimulator) -> None:
    ctx = ssl.create_default_context(cafile=str(adcs.trust_anchor))
    auth = basic_auth("CORP\\certd", "Adcs-Secret1")
    async with aiohttp.ClientSession() as session:
        for header, expected in (
            ("ko-KR,ko;q=0.9", "ko"),
            ("it, de;q=0.5", "de"),
            ("fr-FR", "fr"),
            ("zh-CN", "zh-CN"),
        ):
            async with session.get(
                f"{adcs.url}/certcarc.asp", ssl=ctx,
                headers={"Authorization": auth, "Accept-Language": header},
            ) as resp:  # fmt: skip
                assert resp.headers["Content-Language"] == expected
