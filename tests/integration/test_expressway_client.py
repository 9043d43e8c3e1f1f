"""The real Expressway client against the Expressway simulator, over HTTPS and SSH on loopback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from expressway_certd_lab.expressway import ExpresswaySim
from expressway_certd_lab.pki import CA, cert_pem

from expressway_certd.monitor.errors import DeviceError
from expressway_certd.renewers.expressway import (
    CsrRequest,
    ExpresswayClient,
    ExpresswayClientConfig,
    OperationUnsupported,
    PendingCsrConflict,
)


def client_config(sim: ExpresswaySim, **overrides: Any) -> ExpresswayClientConfig:
    values: dict[str, Any] = {
        "name": sim.name,
        "host": sim.host,
        "username": sim.username,
        "password": sim.password,
        "api_port": sim.api_port,
        "api_ca_file": sim.ca_bundle_path,
        "ssh_port": sim.ssh_port or 22,
        "ssh_known_hosts": sim.ssh_known_hosts_path,
        "timeout": 5.0,
        "retries": 2,
        "backoff": 0.01,
        "poll_interval": 0.05,
        "restart_down_grace": 5.0,
        "restart_timeout": 10.0,
    }
    values.update(overrides)
    return ExpresswayClientConfig(**values)


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[ExpresswaySim]:
    box = ExpresswaySim("expe-c1", role="c", version="X15.4", workdir=tmp_path / "c")
    await box.start()
    yield box
    await box.stop()


@pytest.fixture
async def client(sim: ExpresswaySim) -> AsyncIterator[ExpresswayClient]:
    async with ExpresswayClient(client_config(sim)) as c:
        yield c


async def served_cert(address: str) -> x509.Certificate:
    host, _, port = address.rpartition(":")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    _reader, writer = await asyncio.open_connection(host, int(port), ssl=ctx)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der)


def sign_pending(ca: CA, csr: x509.CertificateSigningRequest) -> x509.Certificate:
    names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    cert, _ = ca.issue(
        names.get_values_for_type(x509.DNSName)[0],
        names.get_values_for_type(x509.DNSName),
        public_key=csr.public_key(),
    )
    return cert


async def raw_post(sim: ExpresswaySim, path: str, **kwargs: Any) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(sim.ca_bundle_path))
    headers = {"Authorization": aiohttp.encode_basic_auth(sim.username, sim.password)}
    headers.update(kwargs.pop("headers", {}))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session,
        session.post(sim.api_url + path, headers=headers, **kwargs) as resp,
    ):
        return resp.status, await resp.text()


def paths(sim: ExpresswaySim, method: str, suffix: str) -> list[str]:
    return [p for m, p, _ in sim.requests if m == method and p.endswith(suffix)]


# ---- discovery and reads ----------------------------------------------------------------------


@pytest.mark.parametrize(("role", "version"), [("c", "X14.3"), ("e", "X15.5"), ("e", "X15.4")])
async def test_system_info_reports_version_role_and_name(
    tmp_path: Path, role: str, version: str
) -> None:
    box = await ExpresswaySim("expe-x", role=role, version=version, workdir=tmp_path).start()
    try:
        async with ExpresswayClient(client_config(box)) as c:
            info = await c.system_info()
        assert (info.name, info.version, info.role) == ("expe-x", version, role)
    finally:
        await box.stop()


async def test_version_missing_from_sysinfo_uses_config_or_says_so(tmp_path: Path) -> None:
    box = ExpresswaySim("expe-c1", version="X15.5", sysinfo_version_key=None, workdir=tmp_path)
    await box.start()
    try:
        async with ExpresswayClient(client_config(box, version="X15.5")) as c:
            assert (await c.system_info()).version == "X15.5"
        async with ExpresswayClient(client_config(box)) as c:
            with pytest.raises(DeviceError) as err:
                await c.system_info()
        assert "no version field" in str(err.value)
        assert "SystemName" in str(err.value)
    finally:
        await box.stop()


async def test_server_certificate_is_the_installed_one(
    sim: ExpresswaySim, client: ExpresswayClient
) -> None:
    assert await client.server_certificate() == sim.installed.cert


async def test_trusted_cas_lists_the_store(sim: ExpresswaySim, client: ExpresswayClient) -> None:
    assert await client.trusted_cas() == sim.trusted_cas


async def test_cluster_peers_include_this_node(tmp_path: Path) -> None:
    box = ExpresswaySim("expe-c1", peers=["expe-c2.lab.example"], workdir=tmp_path)
    await box.start()
    try:
        async with ExpresswayClient(client_config(box)) as c:
            peers = await c.cluster_peers()
        assert peers == ["expe-c1.lab.example", "expe-c2.lab.example"]
        assert any("/api/v1/" in p for p in paths(box, "GET", "/cluster/peers"))
    finally:
        await box.stop()


async def test_missing_operation_names_operation_and_version(tmp_path: Path) -> None:
    box = ExpresswaySim(
        "expe-c1", version="X14.3", without=["/status/common/zone"], workdir=tmp_path
    )
    await box.start()
    try:
        async with ExpresswayClient(client_config(box)) as c:
            with pytest.raises(OperationUnsupported) as err:
                await c.zones()
        message = str(err.value)
        assert "read zone status" in message
        assert "X14.3" in message
        assert "expe-c1" in message
        assert not paths(box, "GET", "/status/common/zone")  # never tried blindly
    finally:
        await box.stop()


# ---- authentication and TLS ---------------------------------------------------------------------


async def test_wrong_password_is_refused_without_leaking_it(sim: ExpresswaySim) -> None:
    secret = "not-the-password-42"
    async with ExpresswayClient(client_config(sim, password=secret)) as c:
        with pytest.raises(DeviceError) as err:
            await c.system_info()
    assert "401" in str(err.value)
    assert "password" in str(err.value)
    assert secret not in str(err.value)


async def test_api_cert_from_an_untrusted_ca_is_refused(sim: ExpresswaySim, tmp_path: Path) -> None:
    other = CA.create("Some Other CA").write_bundle(tmp_path / "other.pem")
    async with ExpresswayClient(client_config(sim, api_ca_file=other)) as c:
        with pytest.raises(DeviceError) as err:
            await c.system_info()
    assert "TLS verification" in str(err.value)
    assert str(other) in str(err.value)


async def test_secrets_never_appear_in_reprs_or_logs(sim: ExpresswaySim) -> None:
    config = client_config(sim)
    with structlog.testing.capture_logs() as logs:
        async with ExpresswayClient(config) as c:
            assert sim.password not in repr(config)
            assert sim.password not in repr(c)
            sim.inject_fault("error", count=1)
            await c.system_info()  # retried once, logged
            await c.generate_csr(CsrRequest(("extra.lab.example",), key_length=2048))
    assert logs, "expected retry and CSR log events"
    assert sim.password not in repr(logs)


# ---- CSR ------------------------------------------------------------------------------------------


async def test_generate_csr_keeps_the_key_on_the_box(
    sim: ExpresswaySim, client: ExpresswayClient
) -> None:
    assert await client.pending_csr() is None
    csr = await client.generate_csr(CsrRequest(("join.lab.example",), key_length=2048))
    sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["expe-c1.lab.example", "join.lab.example"]
    assert sim.pending is not None
    assert csr.public_key() == sim.pending.key.public_key()
    assert (await client.pending_csr()) == csr


async def test_generating_while_pending_is_a_conflict_and_keeps_the_csr(
    sim: ExpresswaySim, client: ExpresswayClient
) -> None:
    first = await client.generate_csr(CsrRequest(key_length=2048))
    with pytest.raises(PendingCsrConflict) as err:
        await client.generate_csr(CsrRequest(("other.lab.example",), key_length=2048))
    assert err.value.csr == first
    assert "pending" in str(err.value)
    assert sim.pending is not None and sim.pending.csr == first


def test_client_has_no_discard_operation() -> None:
    names = [n for n in dir(ExpresswayClient) if "discard" in n.lower() or "delete" in n.lower()]
    assert names == []


# ---- upload and restart ---------------------------------------------------------------------------


async def test_upload_then_restart_activates_the_new_cert(
    sim: ExpresswaySim, client: ExpresswayClient
) -> None:
    old = sim.active.cert
    csr = await client.generate_csr(CsrRequest(key_length=2048))
    assert sim.ca is not None
    new = sign_pending(sim.ca, csr)
    await client.upload_server_certificate(new)
    assert await client.server_certificate() == new
    assert await served_cert(sim.listeners[0]) == old  # not active before a restart
    assert await client.restart() == "api"
    assert sim.restart_count == 1
    for address in sim.listeners:
        assert await served_cert(address) == new


async def test_restart_takes_listeners_down(sim: ExpresswaySim, client: ExpresswayClient) -> None:
    sim.restart_seconds = 0.5
    await client.restart(wait=False)
    await asyncio.sleep(0.2)
    with pytest.raises(OSError):
        await served_cert(sim.listeners[0])
    for port in (sim.api_port, sim.ssh_port):
        with pytest.raises(OSError):
            await asyncio.open_connection(sim.host, port)
    await client.wait_until_restarted()
    assert await served_cert(sim.listeners[0]) == sim.active.cert


async def test_upload_with_a_foreign_key_is_refused_by_the_box(
    sim: ExpresswaySim, client: ExpresswayClient
) -> None:
    await client.generate_csr(CsrRequest(key_length=2048))
    assert sim.ca is not None
    foreign, _ = sim.ca.issue("expe-c1.lab.example")
    with pytest.raises(DeviceError) as err:
        await client.upload_server_certificate(foreign)
    assert "does not match the private key" in str(err.value)
    assert "pending" in str(err.value)
    assert sim.installed.cert != foreign
    assert sim.pending is not None  # still there


async def test_client_refuses_to_upload_a_chain(
    sim: ExpresswaySim, client: ExpresswayClient
) -> None:
    assert sim.ca is not None
    leaf, _ = sim.ca.issue("expe-c1.lab.example")
    bundle = cert_pem(leaf) + cert_pem(sim.ca.cert)
    with pytest.raises(DeviceError, match="server certificate only"):
        await client.upload_server_certificate(bundle)
    assert not paths(sim, "POST", "/certs/server")


@pytest.mark.parametrize("kind", ["chain", "der"])
async def test_simulator_refuses_chain_and_der_uploads(sim: ExpresswaySim, kind: str) -> None:
    assert sim.ca is not None
    leaf, _ = sim.ca.issue("expe-c1.lab.example", key=sim.active.key)
    data = (
        cert_pem(leaf) + cert_pem(sim.ca.cert)
        if kind == "chain"
        else leaf.public_bytes(Encoding.DER)
    )
    form = aiohttp.FormData()
    form.add_field("file", data, filename="server.pem")
    status, body = await raw_post(sim, "/provisioning/certs/server", data=form)
    assert status == 400
    assert ("more than one certificate" if kind == "chain" else "PEM format") in body
    assert sim.installed.cert != leaf


async def test_simulator_requires_csrf_header_on_restart(sim: ExpresswaySim) -> None:
    status, body = await raw_post(sim, "/provisioning/restart")
    assert status == 403
    assert "X-CSRF-Header" in body
    assert sim.restart_count == 0


async def test_simulator_before_x14_2_restarts_without_csrf_header(tmp_path: Path) -> None:
    box = await ExpresswaySim("expe-old", version="X12.7", workdir=tmp_path).start()
    try:
        status, _ = await raw_post(box, "/provisioning/restart")
        assert status == 200
        assert box.restart_count == 1
    finally:
        await box.stop()


async def test_quick_restart_is_not_missed_with_a_slow_poll_interval(sim: ExpresswaySim) -> None:
    sim.restart_seconds = 0.4
    async with ExpresswayClient(client_config(sim, poll_interval=5.0)) as c:
        await asyncio.wait_for(c.restart(), 5)
    assert sim.restart_count == 1


async def test_a_restart_over_before_the_first_poll_is_proven_by_what_it_activated(
    sim: ExpresswaySim,
) -> None:
    """The box restarts faster than the client polls (the lab's `restart_unseen`; a busy
    daemon polls late): the API is never seen down. Without evidence the wait ends in the
    down-grace error; with the new certificate served as evidence it ends at once."""
    sim.restart_unseen = True
    async with ExpresswayClient(client_config(sim, restart_down_grace=1.0)) as c:
        with pytest.raises(DeviceError, match="did not go down within 1s"):
            await c.restart()
        csr = await c.generate_csr(CsrRequest(key_length=2048))
        assert sim.ca is not None
        new = sign_pending(sim.ca, csr)
        await c.upload_server_certificate(new)
        evidence = []

        async def serving_new() -> bool:
            evidence.append(await served_cert(sim.listeners[0]) == new)
            return evidence[-1]

        assert await asyncio.wait_for(c.restart(restarted=serving_new), 30) == "api"
    assert sim.restart_count == 2 and evidence == [True]


async def test_every_mutating_call_carries_the_csrf_header(
    sim: ExpresswaySim, client: ExpresswayClient
) -> None:
    await client.generate_csr(CsrRequest(key_length=2048))
    await client.add_trusted_cas([CA.create("Extra CA").cert])
    await client.restart()
    posts = [h for m, _, h in sim.requests if m == "POST"]
    assert len(posts) == 3
    assert all("X-CSRF-Header" in h for h in posts)


async def test_restart_falls_back_to_ssh_when_the_api_lacks_it(tmp_path: Path) -> None:
    box = ExpresswaySim("expe-e1", role="e", without=["/provisioning/restart"], workdir=tmp_path)
    await box.start()
    try:
        async with ExpresswayClient(client_config(box)) as c:
            assert await c.restart() == "ssh"
        assert box.ssh_commands == ["xCommand Boot"]
        assert box.restart_count == 1
    finally:
        await box.stop()


async def test_ssh_fallback_with_unknown_host_key_is_refused(tmp_path: Path) -> None:
    box = ExpresswaySim("expe-e1", role="e", without=["/provisioning/restart"], workdir=tmp_path)
    await box.start()
    try:
        empty = tmp_path / "empty_known_hosts"
        empty.write_text("")
        async with ExpresswayClient(client_config(box, ssh_known_hosts=empty)) as c:
            with pytest.raises(DeviceError, match="host key"):
                await c.restart()
        assert box.restart_count == 0
    finally:
        await box.stop()


# ---- trusted CAs ------------------------------------------------------------------------------------


async def test_add_trusted_cas_adds_only_missing_ones(
    sim: ExpresswaySim, client: ExpresswayClient
) -> None:
    new_root = CA.create("New Root CA")
    new_issuing = CA.create("New Issuing CA", parent=new_root)
    added = await client.add_trusted_cas(new_issuing.chain())
    assert added == new_issuing.chain()
    assert all(c in sim.trusted_cas for c in new_issuing.chain())
    assert await client.add_trusted_cas(new_issuing.chain()) == []
    assert len(paths(sim, "POST", "/certs/root")) == 1


# ---- faults: retries only where safe --------------------------------------------------------------


async def test_5xx_is_retried(sim: ExpresswaySim, client: ExpresswayClient) -> None:
    sim.inject_fault("error", path="/api/provisioning/certs/server", count=2, status=503)
    assert await client.server_certificate() == sim.installed.cert
    assert len(paths(sim, "GET", "/certs/server")) == 3


async def test_persistent_5xx_gives_up_with_the_status(
    sim: ExpresswaySim, client: ExpresswayClient
) -> None:
    sim.inject_fault("error", path="/api/provisioning/certs/server", count=-1, status=500)
    with pytest.raises(DeviceError) as err:
        await client.server_certificate()
    assert "HTTP 500" in str(err.value)
    assert "read server certificate" in str(err.value)
    assert len(paths(sim, "GET", "/certs/server")) == 3  # 1 + 2 retries


async def test_4xx_is_not_retried(sim: ExpresswaySim, client: ExpresswayClient) -> None:
    sim.inject_fault("error", path="/api/provisioning/certs/root", count=-1, status=400)
    with pytest.raises(DeviceError, match="HTTP 400"):
        await client.trusted_cas()
    assert len(paths(sim, "GET", "/certs/root")) == 1


async def test_dropped_connections_are_retried(
    sim: ExpresswaySim, client: ExpresswayClient
) -> None:
    await client.capabilities()
    sim.inject_fault("drop", path="/api/provisioning/certs/root", count=3)
    assert await client.trusted_cas() == sim.trusted_cas


async def test_slow_answer_times_out_and_is_not_retried(sim: ExpresswaySim) -> None:
    async with ExpresswayClient(client_config(sim, timeout=0.5)) as c:
        await c.capabilities()
        sim.inject_fault("slow", path="/api/provisioning/certs/generate_csr", delay=1.0)
        with pytest.raises(DeviceError, match="no answer"):
            await c.generate_csr(CsrRequest(key_length=2048))
    assert len(paths(sim, "POST", "/generate_csr")) == 1
