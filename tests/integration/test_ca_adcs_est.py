"""AD CS and EST specifics against the lab simulators over HTTPS: templates and their EKUs,
denials with the CA's disposition message, NTLM with and without Extended Protection, Basic,
the User-Agent quirk; EST labels, client-certificate auth, csrattrs, simplereenroll."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from lab.adcs import ADCSSimulator
from lab.est import ESTSimulator
from lab.pki import CA, CLIENT_AUTH, SERVER_AUTH, write_key_and_chain
from monitor.config import Secret
from monitor.config_ca import ADCSConfig, ESTConfig
from monitor.errors import CAError
from renewers.ca.adcs import ADCSConnector
from renewers.ca.base import Issued, Pending, utcnow
from renewers.ca.est import ESTConnector
from renewers.ca.httpclient import basic_auth
from tests.integration.ca_servers import make_csr, until_issued

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
    with ESTSimulator(client_ca=client_ca) as sim:
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
