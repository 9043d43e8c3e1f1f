"""The real Unified CM client against the Unified CM simulator: certmgr REST, Control Center
Services SOAP and the admin: CLI over SSH, on loopback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lab.cucm import SOAP_PATH, CucmSim
from lab.pki import CA
from monitor.errors import DeviceError
from renewers.cucm import CucmClient, CucmClientConfig


def config_for(sim: CucmSim, **overrides: Any) -> CucmClientConfig:
    values: dict[str, Any] = {
        "name": "cucm",
        "nodes": (sim.host,),
        "username": sim.username,
        "password": sim.password,
        "api_port": sim.api_port,
        "soap_port": sim.soap_port,
        "ssh_port": sim.ssh_port,
        "api_ca_file": sim.ca_bundle_path,
        "ssh_known_hosts": sim.ssh_known_hosts_path,
        "timeout": 5.0,
        "retries": 1,
        "backoff": 0.01,
        "service_timeout": 5.0,
        "poll_interval": 0.05,
    }
    values.update(overrides)
    return CucmClientConfig(**values)


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[CucmSim]:
    node = CucmSim("cucm1", service_restart_seconds=0.2, workdir=tmp_path / "cucm")
    await node.start()
    yield node
    await node.stop()


@pytest.fixture
async def client(sim: CucmSim) -> AsyncIterator[CucmClient]:
    async with CucmClient(config_for(sim)) as c:
        yield c


async def test_lists_a_trust_store(sim: CucmSim, client: CucmClient) -> None:
    assert await client.trusted(sim.host, "callmanager") == sim.trust["callmanager"]


async def test_add_trust_to_tomcat_and_callmanager_once(sim: CucmSim, client: CucmClient) -> None:
    new = CA.create("New Issuing CA", parent=CA.create("New Root CA"))
    added = await client.add_trust(sim.host, new.chain())
    assert added == {"tomcat": new.chain(), "callmanager": new.chain()}
    for store in ("tomcat", "callmanager"):
        assert all(c in sim.trust[store] for c in new.chain())
    assert sim.trust["ipsec"] == sim.effective_trust["ipsec"]  # other stores untouched
    assert await client.add_trust(sim.host, new.chain()) == {}


async def test_trust_takes_effect_after_the_reading_service_restarts(
    sim: CucmSim, client: CucmClient
) -> None:
    new = CA.create("New Root CA")
    await client.add_trust(sim.host, [new.cert], stores=("callmanager",))
    assert new.cert not in sim.effective_trust["callmanager"]
    await client.restart_services(sim.host, ["Cisco CallManager"])
    assert new.cert in sim.effective_trust["callmanager"]


async def test_service_status_reads_started_and_unknown_as_stopped(
    client: CucmClient, sim: CucmSim
) -> None:
    states = await client.service_status(sim.host, ["Cisco CallManager", "Cisco Nonsense"])
    assert states == {"Cisco CallManager": "Started", "Cisco Nonsense": "Stopped"}


async def test_restart_services_through_soap_waits_until_started(
    sim: CucmSim, client: CucmClient
) -> None:
    await client.restart_services(sim.host, ["Cisco CallManager", "Cisco Tftp"])
    assert sim.restarts["Cisco CallManager"] == 1
    assert sim.restarts["Cisco Tftp"] == 1
    assert sim.services["Cisco CallManager"] == "Started"
    assert "soapDoControlServices" in sim.soap_requests
    assert sim.ssh_commands == []


async def test_misspelt_service_name_is_reported(sim: CucmSim, client: CucmClient) -> None:
    with pytest.raises(DeviceError) as err:
        await client.restart_services(sim.host, ["cisco callmanager"])
    assert "case-sensitive" in str(err.value)
    assert "cisco callmanager" in str(err.value)


async def test_tomcat_is_restarted_over_ssh(sim: CucmSim, client: CucmClient) -> None:
    await client.restart_services(sim.host, ["Cisco Tomcat"])
    assert sim.ssh_commands == ["utils service restart Cisco Tomcat"]
    assert sim.restarts["Cisco Tomcat"] == 1
    assert "soapDoControlServices" not in sim.soap_requests


async def test_simulator_refuses_tomcat_through_soap(sim: CucmSim) -> None:
    envelope = (
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:soap="http://schemas.cisco.com/ast/soap"><soapenv:Body><soap:soapDoControlServices>'
        "<soap:ControlServiceRequest><soap:ControlType>Restart</soap:ControlType><soap:ServiceList>"
        "<soap:item>Cisco Tomcat</soap:item></soap:ServiceList></soap:ControlServiceRequest>"
        "</soap:soapDoControlServices></soapenv:Body></soapenv:Envelope>"
    )
    ctx = ssl.create_default_context(cafile=str(sim.ca_bundle_path))
    headers = {"Authorization": aiohttp.encode_basic_auth(sim.username, sim.password)}
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session,
        session.post(
            f"https://{sim.host}:{sim.soap_port}{SOAP_PATH}", data=envelope, headers=headers
        ) as resp,
    ):
        body = await resp.text()
    assert resp.status == 500
    assert "utils service restart Cisco Tomcat" in body
    assert sim.restarts["Cisco Tomcat"] == 0


async def test_tomcat_restart_closes_the_https_ports(sim: CucmSim, client: CucmClient) -> None:
    sim.service_restart_seconds = 0.6
    task = asyncio.create_task(client.restart_tomcat(sim.host))
    await asyncio.sleep(0.3)
    with pytest.raises(OSError):
        _, writer = await asyncio.open_connection(sim.host, sim.api_port)
        writer.close()
    await task
    assert (await client.service_status(sim.host, ["Cisco Tomcat"])) == {"Cisco Tomcat": "Started"}


async def test_wrong_password_is_refused_without_leaking_it(sim: CucmSim) -> None:
    async with CucmClient(config_for(sim, password="wrong-pw-123")) as c:
        with pytest.raises(DeviceError) as err:
            await c.trusted(sim.host, "tomcat")
    assert "401" in str(err.value)
    assert "wrong-pw-123" not in str(err.value)


async def test_ssh_with_wrong_password_is_refused(sim: CucmSim) -> None:
    async with CucmClient(config_for(sim, password="wrong-pw-123")) as c:
        with pytest.raises(DeviceError, match="SSH login"):
            await c.restart_tomcat(sim.host)
    assert sim.restarts["Cisco Tomcat"] == 0


def test_password_not_in_reprs(sim: CucmSim) -> None:
    config = config_for(sim)
    assert sim.password not in repr(config)
    assert sim.password not in repr(CucmClient(config))
