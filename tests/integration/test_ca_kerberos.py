"""AD CS with Kerberos (Negotiate): a real MIT KDC on loopback, the certsrv simulator accepting
with a keytab for HTTP/127.0.0.1, the connector authenticating with a password or a ticket."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from expressway_certd_lab.adcs import ADCSSimulator

from expressway_certd.monitor.config import Secret
from expressway_certd.monitor.errors import CAError
from expressway_certd.renewers.ca.adcs import ADCSConnector
from expressway_certd.renewers.ca.adcs_config import ADCSConfig
from expressway_certd.renewers.ca.base import Issued
from tests.helpers import need_binary
from tests.integration.ca_servers import KDC, REALM, make_csr

pytestmark = pytest.mark.integration


@pytest.fixture
def certsrv(kdc: KDC, monkeypatch: pytest.MonkeyPatch) -> Iterator[ADCSSimulator]:
    for key in ("KRB5_CONFIG", "KRB5CCNAME"):
        monkeypatch.setenv(key, kdc.env[key])
    monkeypatch.setenv("CERTD_KRB_PASSWORD", kdc.password)
    with ADCSSimulator(auth=("negotiate",), keytab=kdc.keytab) as sim:
        yield sim


def conn(sim: ADCSSimulator, username: str | None, password_env: str | None) -> ADCSConnector:
    return ADCSConnector(
        ADCSConfig(
            "corp-adcs", sim.url, "CollabServerClient", auth="kerberos",
            trust_anchor=sim.trust_anchor, username=username,
            password=Secret(f"env:{password_env}") if password_env else None,
        )
    )  # fmt: skip


async def test_kerberos_with_password(certsrv: ADCSSimulator, kdc: KDC) -> None:
    c = conn(certsrv, kdc.user, "CERTD_KRB_PASSWORD")
    issued = await c.submit(make_csr("expe.example.com"))
    assert isinstance(issued, Issued)
    assert certsrv.principals == [f"certd@{REALM}"]
    await c.aclose()


async def test_kerberos_with_a_ticket_from_kinit(certsrv: ADCSSimulator, kdc: KDC) -> None:
    kinit = await asyncio.create_subprocess_exec(
        need_binary("kinit"), kdc.user, env=kdc.env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await kinit.communicate(kdc.password.encode() + b"\n")
    assert kinit.returncode == 0
    c = conn(certsrv, None, None)
    assert (await c.check())[0].ok
    assert certsrv.principals == [f"certd@{REALM}"]
    await c.aclose()


async def test_kerberos_wrong_password_says_what_to_check(
    certsrv: ADCSSimulator, kdc: KDC, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CERTD_KRB_BAD", "Not-The-Password1")
    c = conn(certsrv, kdc.user, "CERTD_KRB_BAD")
    with pytest.raises(CAError) as info:
        await c.submit(make_csr("expe.example.com"))
    message = str(info.value)
    assert message.startswith("CA 'corp-adcs': submit: ")
    assert "Not-The-Password1" not in message
    await c.aclose()
