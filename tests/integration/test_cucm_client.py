"""The real Unified CM client against the Unified CM simulator: certmgr REST, Control Center
Services SOAP and the admin: CLI over SSH, on loopback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncssh
import pytest
from expressway_certd_lab.cucm import SOAP_PATH, CucmSim
from expressway_certd_lab.pki import CA

from expressway_certd.monitor.errors import DeviceError
from expressway_certd.renewers.cucm import (
    DEFAULT_RESTART_SERVICES,
    NOT_ACTIVATED,
    RESTARTED,
    CucmClient,
    CucmClientConfig,
)


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


# ---- issue 9: services read first, web applications awaited, a terminal requested ----------


async def start_node(tmp_path: Path, **kwargs: Any) -> CucmSim:
    node = CucmSim("cucm1", service_restart_seconds=0.2, workdir=tmp_path / "node", **kwargs)
    return await node.start()


def test_default_restart_list_includes_tftp_and_ends_with_tomcat() -> None:
    assert "Cisco Tftp" in DEFAULT_RESTART_SERVICES
    assert DEFAULT_RESTART_SERVICES[-1] == "Cisco Tomcat"


async def test_service_not_activated_is_skipped_not_an_error(tmp_path: Path) -> None:
    node = await start_node(tmp_path, deactivated=("Cisco Tftp",))
    try:
        async with CucmClient(config_for(node)) as c:
            states = await c.service_states(node.host, ["Cisco Tftp", "Cisco CallManager"])
            assert not states["Cisco Tftp"].activated
            assert states["Cisco CallManager"].activated
            outcome = await c.restart_services(node.host, list(DEFAULT_RESTART_SERVICES))
        assert outcome == {
            "Cisco CallManager": RESTARTED,
            "Cisco Tftp": NOT_ACTIVATED,
            "Cisco Tomcat": RESTARTED,
        }
        assert node.restarts["Cisco Tftp"] == 0
        assert node.restarts["Cisco CallManager"] == 1 and node.restarts["Cisco Tomcat"] == 1
    finally:
        await node.stop()


async def test_restart_service_is_per_node_and_service(sim: CucmSim, client: CucmClient) -> None:
    assert await client.restart_service(sim.host, "Cisco CallManager") == RESTARTED
    assert sim.restarts["Cisco CallManager"] == 1
    assert all(n == 0 for s, n in sim.restarts.items() if s != "Cisco CallManager")


async def test_after_tomcat_restart_the_apis_answer_before_it_returns(tmp_path: Path) -> None:
    node = await start_node(tmp_path, webapp_deploy_seconds=1.0)
    try:
        async with CucmClient(config_for(node)) as c:
            assert await c.restart_service(node.host, "Cisco Tomcat") == RESTARTED
            assert node.deploy_refusals > 0  # it did meet the deploying web applications
            # The very next calls work: neither answers 404/503 any more.
            assert await c.trusted(node.host, "tomcat") == node.trust["tomcat"]
            assert (await c.service_status(node.host, ["Cisco CallManager"])) == {
                "Cisco CallManager": "Started"
            }
    finally:
        await node.stop()


async def test_webapps_that_never_deploy_fail_within_the_budget(tmp_path: Path) -> None:
    node = await start_node(tmp_path, webapp_deploy_seconds=3600.0)
    try:
        async with CucmClient(config_for(node, webapp_timeout=0.5)) as c:
            with pytest.raises(DeviceError, match=r"did not answer within 0\.5s") as caught:
                await c.restart_service(node.host, "Cisco Tomcat")
        assert "certificate API" in str(caught.value) and "HTTP 404" in str(caught.value)
    finally:
        await node.stop()


async def test_cli_refuses_a_session_without_a_terminal(sim: CucmSim, client: CucmClient) -> None:
    known = sim.ssh_known_hosts_path
    assert known is not None
    async with asyncssh.connect(
        sim.host,
        port=sim.ssh_port,
        username=sim.username,
        password=sim.password,
        known_hosts=str(known),
        client_keys=None,
        agent_path=None,
    ) as conn:
        result = await conn.run("utils service restart Cisco Tomcat", input="", timeout=10)
    assert "terminal" in str(result.stderr)
    assert sim.refused_without_pty == 1 and sim.ssh_commands == []
    await client.restart_tomcat(sim.host)  # the client asks for a pty, as public clients do
    assert sim.refused_without_pty == 1 and sim.restarts["Cisco Tomcat"] == 1
