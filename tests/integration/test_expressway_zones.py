"""Traversal zone (C <-> E) and secure zone (C <-> Unified CM) in the linked lab, read through the
real clients: Active only while trust and EKU fit, Failed with the reason otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from expressway_certd_lab.expressway import ExpresswaySim
from expressway_certd_lab.pki import CA, CLIENT_AUTH, SERVER_AUTH
from expressway_certd_lab.topology import Lab
from expressway_certd_lab.zones import expressway_needs_client_auth

from expressway_certd.renewers.cucm import CucmClient, CucmClientConfig
from expressway_certd.renewers.expressway import (
    CsrRequest,
    ExpresswayClient,
    ExpresswayClientConfig,
)


def xway_config(sim: ExpresswaySim, lab: Lab) -> ExpresswayClientConfig:
    return ExpresswayClientConfig(
        name=sim.name,
        host=sim.host,
        username=sim.username,
        password=sim.password,
        api_port=sim.api_port,
        api_ca_file=lab.ca_bundle_path,
        ssh_port=sim.ssh_port or 22,
        ssh_known_hosts=lab.known_hosts_path,
        timeout=5.0,
        retries=1,
        backoff=0.01,
        poll_interval=0.05,
        restart_down_grace=5.0,
        restart_timeout=10.0,
    )


def cucm_config(lab: Lab) -> CucmClientConfig:
    ucm = lab.cucm
    return CucmClientConfig(
        name="cucm",
        nodes=(ucm.host,),
        username=ucm.username,
        password=ucm.password,
        api_port=ucm.api_port,
        soap_port=ucm.soap_port,
        ssh_port=ucm.ssh_port,
        api_ca_file=lab.ca_bundle_path,
        ssh_known_hosts=lab.known_hosts_path,
        timeout=5.0,
        retries=1,
        backoff=0.01,
        service_timeout=10.0,
        poll_interval=0.05,
    )


async def start_lab(tmp_path: Path, **kwargs: Any) -> Lab:
    lab = Lab(tmp_path / "lab", restart_seconds=0.2, service_restart_seconds=0.2, **kwargs)
    return await lab.start()


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    running = await start_lab(tmp_path)
    yield running
    await running.stop()


async def zone_states(lab: Lab, sim: ExpresswaySim) -> dict[str, tuple[str, str]]:
    async with ExpresswayClient(xway_config(sim, lab)) as client:
        return {z.name: (z.state, z.reason) for z in await client.zones()}


def reissue(sim: ExpresswaySim, ca: CA, eku: list[x509.ObjectIdentifier]) -> None:
    cert, key = ca.issue(str(sim.fqdn), [str(sim.fqdn)], eku=eku)
    assert key is not None
    sim.install_now(cert, key)


async def test_fresh_lab_zones_are_active(lab: Lab) -> None:
    assert await zone_states(lab, lab.expressway_c) == {
        "UCTraversal": ("Active", ""),
        "CUCMNeighbor": ("Active", ""),
    }
    assert await zone_states(lab, lab.expressway_e) == {"UCTraversal": ("Active", "")}


async def test_renewal_from_a_new_ca_fails_zones_until_peers_trust_it(lab: Lab) -> None:
    new_ca = CA.create("New Issuing CA", parent=CA.create("New Root CA"))
    c = lab.expressway_c
    async with ExpresswayClient(xway_config(c, lab)) as client:
        csr = await client.generate_csr(CsrRequest(key_length=2048))
        cert, _ = new_ca.issue(str(c.fqdn), [str(c.fqdn)], public_key=csr.public_key())
        await client.add_trusted_cas(new_ca.chain())  # C trusts its own new CA
        await client.upload_server_certificate(cert)
        await client.restart()
    states = await zone_states(lab, c)
    assert states["UCTraversal"][0] == "Failed"
    assert "expe-e1 does not trust the certificate of expe-c1" in states["UCTraversal"][1]
    assert states["CUCMNeighbor"][0] == "Failed"
    assert "cucm1 does not trust" in states["CUCMNeighbor"][1]

    async with ExpresswayClient(xway_config(lab.expressway_e, lab)) as e_client:
        await e_client.add_trusted_cas(new_ca.chain())
    assert (await zone_states(lab, c))["UCTraversal"] == ("Active", "")

    async with CucmClient(cucm_config(lab)) as ucm:
        await ucm.add_trust(lab.cucm.host, new_ca.chain())
        # callmanager-trust is read when Cisco CallManager starts
        assert (await zone_states(lab, c))["CUCMNeighbor"][0] == "Failed"
        await ucm.restart_services(lab.cucm.host, ["Cisco CallManager"])
    assert (await zone_states(lab, c))["CUCMNeighbor"] == ("Active", "")


async def test_zone_fails_while_the_peer_restarts(lab: Lab) -> None:
    lab.expressway_e.restart_seconds = 1.0
    async with ExpresswayClient(xway_config(lab.expressway_e, lab)) as e_client:
        await e_client.restart(wait=False)
        state, reason = lab.traversal_zone.status()
        assert state == "Failed"
        assert "expe-e1 is not reachable" in reason
        await e_client.wait_until_restarted()
    assert lab.traversal_zone.status() == ("Active", "")


@pytest.mark.parametrize(
    ("version", "side", "eku", "state"),
    [
        ("X14.3", "c", [SERVER_AUTH], "Failed"),
        ("X14.3", "e", [SERVER_AUTH], "Failed"),
        ("X14.3", "c", [SERVER_AUTH, CLIENT_AUTH], "Active"),
        ("X15.4", "e", [SERVER_AUTH], "Active"),
        ("X15.4", "c", [SERVER_AUTH], "Failed"),
        # X15.5: the server certificate needs serverAuth only; the client store keeps the
        # copy made at upgrade (both EKUs), so the zone stays up.
        ("X15.5", "c", [SERVER_AUTH], "Active"),
        ("X15.4", "e", [CLIENT_AUTH], "Failed"),  # an Expressway-E must serve with serverAuth
    ],
)
async def test_eku_each_version_needs(
    tmp_path: Path, version: str, side: str, eku: list[x509.ObjectIdentifier], state: str
) -> None:
    lab = await start_lab(tmp_path, version=version)
    try:
        sim = lab.expressway_c if side == "c" else lab.expressway_e
        reissue(sim, lab.ca, eku)
        got, reason = (await zone_states(lab, lab.expressway_e))["UCTraversal"]
        assert got == state, reason
        if state == "Failed":
            assert "EKU" in reason
    finally:
        await lab.stop()


async def test_x15_5_with_eku_checking_off_accepts_server_auth_only(tmp_path: Path) -> None:
    lab = await start_lab(tmp_path, version="X15.5")
    try:
        c = lab.expressway_c
        server_only, key = lab.ca.issue(str(c.fqdn), [str(c.fqdn)], eku=[SERVER_AUTH])
        assert key is not None
        c.install_client_now(server_only, key)
        assert lab.traversal_zone.status()[0] == "Failed"
        c.eku_checking = lab.expressway_e.eku_checking = False
        assert lab.traversal_zone.status() == ("Active", "")
    finally:
        await lab.stop()


async def test_x15_5_needs_the_same_version_on_both_sides(tmp_path: Path) -> None:
    lab = await start_lab(tmp_path, c_version="X15.4", e_version="X15.5")
    try:
        state, reason = (await zone_states(lab, lab.expressway_c))["UCTraversal"]
        assert state == "Failed"
        assert "same version" in reason
    finally:
        await lab.stop()


async def test_expired_certificate_fails_the_zone(lab: Lab) -> None:
    now = datetime.now(UTC)
    cert, key = lab.ca.issue(
        str(lab.expressway_e.fqdn),
        not_before=now - timedelta(days=30),
        not_after=now - timedelta(days=1),
    )
    assert key is not None
    lab.expressway_e.install_now(cert, key)
    state, reason = lab.traversal_zone.status()
    assert state == "Failed"
    assert "expired" in reason


def test_client_auth_rule_table() -> None:
    assert expressway_needs_client_auth("X14.3", "e", True)
    assert expressway_needs_client_auth("X15.3", "e", True)
    assert not expressway_needs_client_auth("X15.4", "e", True)
    assert expressway_needs_client_auth("X15.4", "c", True)
    assert expressway_needs_client_auth("X15.5", "c", True)
    assert not expressway_needs_client_auth("X15.5", "c", False)


async def test_x15_5_zone_uses_the_client_certificate_copied_at_upgrade(tmp_path: Path) -> None:
    """Cisco doc 225693: the upgrade copies the server certificate and key into the client
    store; the C presents that copy on the traversal zone, so renewing only the server
    certificate leaves the zone depending on the OLD expiry and EKU."""
    lab = await start_lab(tmp_path, version="X15.5")
    try:
        c = lab.expressway_c
        copied = c.client_cert
        assert copied == c.served_cert
        async with ExpresswayClient(xway_config(c, lab)) as client:
            assert await client.client_certificate() == copied
        reissue(c, lab.ca, [SERVER_AUTH])  # a renewed, serverAuth-only server certificate
        assert c.client_cert == copied  # the client store is untouched
        assert (await zone_states(lab, lab.expressway_e))["UCTraversal"][0] == "Active"

        old, old_key = lab.ca.issue(
            str(c.fqdn),
            [str(c.fqdn)],
            not_before=datetime.now(UTC) - timedelta(days=30),
            not_after=datetime.now(UTC) - timedelta(minutes=1),
        )
        assert old_key is not None
        c.install_client_now(old, old_key)
        state, reason = (await zone_states(lab, lab.expressway_e))["UCTraversal"]
        assert state == "Failed" and "client certificate of expe-c1" in reason, reason
        assert "expired" in reason

        no_client_auth, key = lab.ca.issue(str(c.fqdn), [str(c.fqdn)], eku=[SERVER_AUTH])
        assert key is not None
        c.install_client_now(no_client_auth, key)
        state, reason = (await zone_states(lab, lab.expressway_e))["UCTraversal"]
        assert state == "Failed" and "client certificate of expe-c1 lacks" in reason, reason

        good, key = lab.ca.issue(str(c.fqdn), [str(c.fqdn)], eku=[SERVER_AUTH, CLIENT_AUTH])
        assert key is not None
        c.install_client_now(good, key)
        assert (await zone_states(lab, lab.expressway_e))["UCTraversal"] == ("Active", "")
    finally:
        await lab.stop()


def test_upgrade_to_x15_5_copies_server_certificate_into_the_client_store(tmp_path: Path) -> None:
    sim = ExpresswaySim("expe-c1", role="c", version="X15.4", cert_days=20, workdir=tmp_path)
    assert sim.client is None and sim.client_cert == sim.served_cert
    sim.upgrade("X15.5")
    assert sim.client is not None
    assert sim.client.cert == sim.installed.cert and sim.client.key is sim.installed.key
    assert sim.client_cert.not_valid_after_utc == sim.installed.cert.not_valid_after_utc
