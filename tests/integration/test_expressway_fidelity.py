"""The Expressway client against the simulator on the points Cisco's documents make (issue 9):
EKU refusals reported as such, FN74362's X15.4 switch read over SSH, a pending CSR recognised
whatever status carries it, trusted CAs never lost, the box's own ACME, the X15.5 client
certificate resource, and the reboot answers public scripts accept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from expressway_certd_lab.expressway import ExpresswaySim
from expressway_certd_lab.pki import CA, CLIENT_AUTH, SERVER_AUTH

from expressway_certd.monitor.errors import DeviceError
from expressway_certd.renewers.expressway import (
    CertificateEkuRefused,
    CsrRequest,
    ExpresswayClient,
    OperationUnsupported,
    PendingCsrConflict,
    TrustedCasLost,
    boot_started,
)
from tests.integration.test_expressway_client import client_config, sign_pending


async def started(tmp_path: Path, **kwargs: Any) -> ExpresswaySim:
    values: dict[str, Any] = {"name": "expe-c1", "role": "c", "version": "X15.4"}
    values.update(kwargs)
    return await ExpresswaySim(workdir=tmp_path / str(values["name"]), **values).start()


def sign_with_eku(ca: CA, csr: Any, eku: list[Any]) -> Any:
    names = [n.value for n in csr.extensions.get_extension_for_class(_san()).value]
    cert, _ = ca.issue(names[0], names, public_key=csr.public_key(), eku=eku)
    return cert


def _san() -> Any:

    return x509.SubjectAlternativeName


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (409, "Conflict"),
        (400, "A certificate signing request is already in progress"),
        (500, "CSR already exists; discard it first"),
        (200, "Conflict"),
    ],
)
async def test_pending_csr_is_recognised_whatever_status_carries_it(
    tmp_path: Path, status: int, message: str
) -> None:
    box = await started(tmp_path, csr_pending_answer=(status, message))
    try:
        async with ExpresswayClient(client_config(box, timeout=30.0)) as client:
            first = await client.generate_csr(CsrRequest(key_length=2048))
            with pytest.raises(PendingCsrConflict) as caught:
                await client.generate_csr(CsrRequest(key_length=2048))
        assert caught.value.csr == first
        assert box.csr_generated == 1 and box.pending is not None
    finally:
        await box.stop()


@pytest.mark.parametrize(("version", "role"), [("X14.3", "c"), ("X15.4", "c"), ("X15.4", "e")])
async def test_eku_refusal_is_reported_as_eku_not_as_key_mismatch(
    tmp_path: Path, version: str, role: str
) -> None:
    box = await started(tmp_path, version=version, role=role)
    try:
        async with ExpresswayClient(client_config(box, timeout=30.0)) as client:
            csr = await client.generate_csr(CsrRequest(key_length=2048))
            leaf = sign_with_eku(box.ca, csr, [SERVER_AUTH])  # type: ignore[arg-type]
            with pytest.raises(CertificateEkuRefused) as caught:
                await client.upload_server_certificate(leaf)
        text = str(caught.value)
        assert "Extended Key Usage" in text and "EnableServerEkuUpload" in text
        assert "signed for the CSR" not in text  # not the key-mismatch advice
        assert box.uploads == 0 and box.pending is not None  # the CSR is kept
    finally:
        await box.stop()


async def test_x15_4_e_switch_is_read_over_ssh_and_decides_the_upload(tmp_path: Path) -> None:
    box = await started(tmp_path, name="expe-e1", role="e", version="X15.4")
    try:
        async with ExpresswayClient(client_config(box, timeout=30.0)) as client:
            assert await client.server_eku_upload() is False
            csr = await client.generate_csr(CsrRequest(key_length=2048))
            leaf = sign_with_eku(box.ca, csr, [SERVER_AUTH])  # type: ignore[arg-type]
            with pytest.raises(CertificateEkuRefused):
                await client.upload_server_certificate(leaf)
            box.server_eku_upload = True  # the admin ran the xConfiguration
            assert await client.server_eku_upload() is True
            await client.upload_server_certificate(leaf)
        assert box.uploads == 1
    finally:
        await box.stop()


async def test_switch_is_unknown_where_the_version_lacks_it(tmp_path: Path) -> None:
    box = await started(tmp_path, name="expe-e1", role="e", version="X15.5")
    try:
        async with ExpresswayClient(client_config(box, timeout=30.0)) as client:
            assert await client.server_eku_upload() is None
    finally:
        await box.stop()


async def test_x15_5_accepts_a_server_only_server_certificate(tmp_path: Path) -> None:
    box = await started(tmp_path, version="X15.5")
    try:
        async with ExpresswayClient(client_config(box, timeout=30.0)) as client:
            csr = await client.generate_csr(CsrRequest(key_length=2048))
            await client.upload_server_certificate(sign_pending(box.ca, csr))  # type: ignore[arg-type]
            leaf = sign_with_eku(
                box.ca, await client.generate_csr(CsrRequest(key_length=2048)), [SERVER_AUTH]
            )  # type: ignore[arg-type]
            await client.upload_server_certificate(leaf)
        assert box.uploads == 2
    finally:
        await box.stop()


async def test_trusted_ca_upload_never_loses_a_ca(tmp_path: Path) -> None:
    box = await started(tmp_path, trusted_ca_upload_replaces=True)
    try:
        before = list(box.trusted_cas)
        new_root = CA.create("New Root CA")
        async with ExpresswayClient(client_config(box, timeout=30.0)) as client:
            with pytest.raises(TrustedCasLost) as caught:
                await client.add_trusted_cas([new_root.root().cert])
        assert "uploaded again" in str(caught.value)
        assert all(c in box.trusted_cas for c in before)
        assert new_root.root().cert in box.trusted_cas
    finally:
        await box.stop()


async def test_trusted_ca_upload_that_appends_is_quiet(tmp_path: Path) -> None:
    box = await started(tmp_path)
    try:
        new_root = CA.create("New Root CA")
        async with ExpresswayClient(client_config(box, timeout=30.0)) as client:
            assert await client.add_trusted_cas([new_root.root().cert]) == [new_root.root().cert]
    finally:
        await box.stop()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"name": "expe-e1", "role": "e", "acme_enabled": True}, True),
        ({"name": "expe-e1", "role": "e", "acme_enabled": False}, False),
        ({"name": "expe-e1", "role": "e", "without": ["/provisioning/certs/acme"]}, None),
        ({"role": "c"}, False),
    ],
)
async def test_acme_scheduler_on_the_box(
    tmp_path: Path, kwargs: dict[str, Any], expected: bool | None
) -> None:
    box = await started(tmp_path, **kwargs)
    try:
        async with ExpresswayClient(client_config(box, timeout=30.0)) as client:
            assert await client.acme_scheduler() is expected
    finally:
        await box.stop()


async def test_client_certificate_is_discovered_from_raml(tmp_path: Path) -> None:
    box = await started(tmp_path, version="X15.5", cert_eku=[SERVER_AUTH, CLIENT_AUTH])
    try:
        async with ExpresswayClient(client_config(box, timeout=30.0)) as client:
            assert await client.client_certificate() == box.client_cert
    finally:
        await box.stop()


@pytest.mark.parametrize(
    ("version", "without"), [("X15.4", []), ("X15.5", ["/provisioning/certs/client"])]
)
async def test_missing_client_certificate_resource_fails_loudly(
    tmp_path: Path, version: str, without: list[str]
) -> None:
    box = await started(tmp_path, version=version, without=without)
    try:
        async with ExpresswayClient(client_config(box, timeout=30.0)) as client:
            with pytest.raises(OperationUnsupported) as caught:
                await client.client_certificate()
        assert "read client certificate" in str(caught.value)
        assert version in str(caught.value)
    finally:
        await box.stop()


@pytest.mark.parametrize("form", ["xapi", "ok", "shutdown"])
async def test_ssh_restart_accepts_every_public_form(tmp_path: Path, form: str) -> None:
    box = await started(
        tmp_path, without=["/provisioning/restart"], boot_output=form, restart_seconds=0.2
    )
    try:
        async with ExpresswayClient(client_config(box, timeout=30.0)) as client:
            assert await client.restart() == "ssh"
        assert box.restart_count == 1
    finally:
        await box.stop()


async def test_ssh_restart_refused_by_the_cli_is_an_error(tmp_path: Path) -> None:
    box = await started(tmp_path, without=["/provisioning/restart"], boot_output="error")
    try:
        async with ExpresswayClient(client_config(box, timeout=30.0)) as client:
            with pytest.raises(DeviceError, match="did not confirm the restart"):
                await client.restart()
        assert box.restart_count == 0
    finally:
        await box.stop()


@pytest.mark.parametrize(
    ("output", "started_"),
    [
        ("*r BootResult (status=OK):\n** end\n\nOK\n", True),
        ("OK\n", True),
        ("The system is going down for reboot NOW!\n", True),
        ("*r BootResult (status=Error):\n    Reason: x\n** end\n\nERROR\n", False),
        ("", False),
        ("Unknown command\n", False),
    ],
)
def test_boot_started_table(output: str, started_: bool) -> None:
    assert boot_started(output) is started_


# ---- renewing the X15.5 client certificate (resources found in /api/raml) -------------------


async def test_client_certificate_is_renewed_through_the_resources_raml_lists(
    tmp_path: Path,
) -> None:
    box = await started(tmp_path, version="X15.5", restart_seconds=0.1)
    server_before = box.served_cert
    try:
        async with ExpresswayClient(client_config(box, timeout=30.0)) as client:
            await client.check_client_renewal()  # every resource is listed: no error
            assert await client.pending_client_csr() is None
            csr = await client.generate_client_csr(CsrRequest(key_length=2048))
            assert await client.pending_client_csr() == csr
            assert await client.pending_csr() is None  # the server store has none pending
            leaf = sign_with_eku(box.ca, csr, [CLIENT_AUTH])
            await client.upload_client_certificate(leaf)
            assert await client.client_certificate() == leaf  # installed
            assert box.client_cert != leaf  # presented only after a restart
            await client.restart(wait=True)
        assert box.client_cert == leaf and box.served_cert == server_before
        assert box.client_uploads == 1 and box.uploads == 0
        paths = {path for _, path, _ in box.requests}
        assert "/api/provisioning/certs/client/generate_csr" in paths
    finally:
        await box.stop()


async def test_client_certificate_without_client_auth_is_refused_for_its_eku(
    tmp_path: Path,
) -> None:
    box = await started(tmp_path, version="X15.5")
    try:
        async with ExpresswayClient(client_config(box, timeout=30.0)) as client:
            csr = await client.generate_client_csr(CsrRequest(key_length=2048))
            with pytest.raises(CertificateEkuRefused) as caught:
                await client.upload_client_certificate(sign_with_eku(box.ca, csr, [SERVER_AUTH]))
        assert "TLS Web Client Authentication" in str(caught.value)
        assert "private CA" in str(caught.value)
        assert box.client_uploads == 0
    finally:
        await box.stop()


async def test_one_csr_slot_a_pending_server_csr_blocks_a_client_csr(tmp_path: Path) -> None:
    box = await started(tmp_path, version="X15.5")
    try:
        async with ExpresswayClient(client_config(box, timeout=30.0)) as client:
            server_csr = await client.generate_csr(CsrRequest(key_length=2048))
            with pytest.raises(PendingCsrConflict):
                await client.generate_client_csr(CsrRequest(key_length=2048))
            assert await client.pending_csr() == server_csr  # kept, never discarded
    finally:
        await box.stop()


@pytest.mark.parametrize(
    ("kwargs", "missing"),
    [
        ({"client_renew_api": False}, "generate client CSR, upload client certificate"),
        ({"without": ["/provisioning/certs/client/generate_csr"]}, "generate client CSR"),
        ({"version": "X15.4"}, "read client certificate, generate client CSR, upload"),
    ],
)
async def test_a_box_without_client_renewal_resources_fails_loudly_with_the_manual_fix(
    tmp_path: Path, kwargs: dict[str, Any], missing: str
) -> None:
    values: dict[str, Any] = {"version": "X15.5", **kwargs}
    box = await started(tmp_path, **values)
    try:
        async with ExpresswayClient(client_config(box, timeout=30.0)) as client:
            with pytest.raises(OperationUnsupported) as caught:
                await client.check_client_renewal()
            assert f"lists no resource to {missing}" in str(caught.value)
            assert "renew the client certificate in the web UI" in str(caught.value)
            with pytest.raises(OperationUnsupported, match="generate client CSR"):
                await client.generate_client_csr(CsrRequest(key_length=2048))
        assert box.csr_generated == 0
        assert not any("generate_csr" in path for _, path, _ in box.requests)
    finally:
        await box.stop()
