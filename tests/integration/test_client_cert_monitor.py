"""Monitoring the X15.5 client certificate: read through the box's REST API over real HTTP
(the lab Expressway), exported with cert_kind="client", and what the series say when the box's
version has no client store, its API lists no resource for it, or the box does not answer."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from expressway_certd_lab.expressway import ExpresswaySim
from expressway_certd_lab.pki import SERVER_AUTH
from expressway_certd_lab.topology import Lab
from prometheus_client.parser import text_string_to_metric_families

from expressway_certd.alerts.metrics import CERT_KIND_FAMILIES, StateExposition
from expressway_certd.monitor.clientcert import (
    STATUS_ERROR,
    STATUS_NOT_APPLICABLE,
    STATUS_OK,
    STATUS_UNPUBLISHED,
)
from expressway_certd.monitor.config import Endpoint, ExpresswayConfig, Secret
from expressway_certd.renewers.clientcert import ClientCertWatch
from tests.helpers import DaemonProcess, free_port


def sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def target_for(box: ExpresswaySim, tmp_path: Path, version: str | None = None) -> ExpresswayConfig:
    secret = tmp_path / f"{box.name}.password"
    secret.write_text(box.password, encoding="utf-8")
    os.chmod(secret, 0o600)
    return ExpresswayConfig(
        box.name,
        box.host,
        box.role,
        (Endpoint(box.host, 443, "https"),),
        version=version,
        username=box.username,
        password=Secret(f"file:{secret}"),
        api_port=box.api_port,
        api_ca_file=box.ca_bundle_path,
    )


async def started(tmp_path: Path, name: str, **kwargs: Any) -> ExpresswaySim:
    return await ExpresswaySim(name=name, workdir=tmp_path / name, **kwargs).start()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


async def test_client_certificate_copied_at_upgrade_is_exported_as_client(
    tmp_path: Path,
) -> None:
    box = await started(tmp_path, "expc", role="c", version="X15.4", cert_days=40)
    target = target_for(box, tmp_path)  # version not configured: the box says which
    watch = ClientCertWatch()
    try:
        before = await watch.read(target)
        assert before.status == STATUS_NOT_APPLICABLE and before.facts is None
        assert before.version == "X15.4" and "X15.5" in (before.error or "")

        box.upgrade("X15.5")  # the upgrade copies the server certificate into the client store
        copied = box.client_cert
        renewed, key = box.ca.issue(box.fqdn, [box.fqdn], eku=[SERVER_AUTH], days=400)
        assert key is not None
        box.install_now(renewed, key)  # the server certificate is renewed, the copy is not
        state = await watch.read(target)
        assert state.status == STATUS_OK and state.facts is not None
        assert state.facts.sha256 == sha256(copied) != sha256(renewed)
        assert state.facts.not_after == copied.not_valid_after_utc
        assert state.eku_problem is None  # the lab's first certificate has clientAuth

        text = StateExposition(
            dict, lambda: [target], "1", client_certs=lambda: watch.states
        ).render()
        got = samples(text)
        client = {
            "cert_kind": "client",
            "host": box.host,
            "port": str(box.api_port),
            "service": "api",
            "target": "expc",
        }
        key_labels = tuple(sorted(client.items()))
        assert (
            got[("expressway_cert_not_after_timestamp_seconds", key_labels)]
            == copied.not_valid_after_utc.timestamp()
        )
        assert got[("expressway_cert_eku_ok", key_labels)] == 1.0
        assert got[("expressway_client_cert_status", (("status", "ok"), ("target", "expc")))] == 1.0
        assert (
            got[("expressway_client_cert_status", (("status", "error"), ("target", "expc")))] == 0.0
        )
        assert all(
            dict(labels).get("cert_kind") == "client"
            for (name, labels) in got
            if name in CERT_KIND_FAMILIES
        )
    finally:
        await box.stop()


async def test_client_certificate_without_client_auth_is_flagged(tmp_path: Path) -> None:
    box = await started(tmp_path, "expc", role="c", version="X15.5", cert_eku=[SERVER_AUTH])
    try:
        state = await ClientCertWatch().read(target_for(box, tmp_path))
        assert state.status == STATUS_OK
        assert state.eku_problem is not None and "Client Authentication" in state.eku_problem
        text = StateExposition(
            dict, lambda: [target_for(box, tmp_path)], "1", client_certs=lambda: {"expc": state}
        ).render()
        assert 'expressway_cert_eku_ok{cert_kind="client"' in text
        assert [
            v for (n, labels), v in samples(text).items()
            if n == "expressway_cert_eku_ok" and dict(labels)["cert_kind"] == "client"
        ] == [0.0]  # fmt: skip
    finally:
        await box.stop()


async def test_unpublished_resource_is_said_not_invented(tmp_path: Path) -> None:
    box = await started(
        tmp_path, "expc", role="c", version="X15.5", without=["/provisioning/certs/client"]
    )
    try:
        state = await ClientCertWatch().read(target_for(box, tmp_path))
        assert state.status == STATUS_UNPUBLISHED and state.facts is None
        assert "read client certificate" in (state.error or "")
        text = StateExposition(
            dict, lambda: [target_for(box, tmp_path)], "1", client_certs=lambda: {"expc": state}
        ).render()
        got = samples(text)
        assert (
            got[("expressway_client_cert_status", (("status", "unpublished"), ("target", "expc")))]
            == 1.0
        )
        assert 'cert_kind="client"' not in text  # no expiry is made up
    finally:
        await box.stop()


async def test_a_failed_read_keeps_the_last_known_certificate(tmp_path: Path) -> None:
    box = await started(tmp_path, "expc", role="c", version="X15.5")
    target = target_for(box, tmp_path)
    watch = ClientCertWatch(timeout=10.0)
    try:
        good = await watch.read(target)
        assert good.status == STATUS_OK
    finally:
        await box.stop()
    failed = await watch.read(target)  # the box is down now
    assert failed.status == STATUS_ERROR and failed.error and "expc" in failed.error
    assert failed.facts == good.facts


@asynccontextmanager
async def hung_server() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """A port that accepts connections and never answers."""
    accepted = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await asyncio.sleep(3600)

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()


async def read_event(watch: ClientCertWatch, name: str) -> None:
    while name not in watch.states:  # noqa: ASYNC110 - the watch has no event to wait on
        await asyncio.sleep(0.01)


def hung_target(tmp_path: Path, port: int) -> ExpresswayConfig:
    secret = tmp_path / "hung.password"
    secret.write_text("x", encoding="utf-8")
    os.chmod(secret, 0o600)
    return ExpresswayConfig(
        "hung", "127.0.0.1", "c", (Endpoint("127.0.0.1", 443, "https"),),
        username="admin", password=Secret(f"file:{secret}"), api_port=port,
    )  # fmt: skip


async def test_a_hung_box_never_delays_the_others(tmp_path: Path) -> None:
    """While the read of a box that never answers is still under way, the other box's state
    is already in."""
    box = await started(tmp_path, "good", role="c", version="X15.5")
    async with hung_server() as (port, accepted):
        watch = ClientCertWatch(timeout=3600)
        task = asyncio.create_task(
            watch.read_all([hung_target(tmp_path, port), target_for(box, tmp_path)])
        )
        try:
            await accepted.wait()
            await asyncio.wait_for(read_event(watch, "good"), 60)
            assert watch.states["good"].status == STATUS_OK
            assert "hung" not in watch.states and not task.done()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await box.stop()


async def test_a_hung_box_ends_as_error_at_its_timeout(tmp_path: Path) -> None:
    async with hung_server() as (port, _accepted):
        state = await ClientCertWatch(timeout=0.5).read(hung_target(tmp_path, port))
    assert state.status == STATUS_ERROR and state.facts is None
    assert state.error is not None
    assert "hung" in state.error and "no answer within" in state.error
    assert f"127.0.0.1:{port}" in state.error


async def test_read_all_forgets_targets_no_longer_given(tmp_path: Path) -> None:
    box = await started(tmp_path, "expc", role="c", version="X15.5")
    try:
        target = target_for(box, tmp_path)
        watch = ClientCertWatch()
        await watch.read_all([target])
        assert set(watch.states) == {"expc"}
        without_credentials = ExpresswayConfig("expc", box.host, "c", ())
        old = ExpresswayConfig("old", box.host, "c", (), version="X15.4", username="a",
                               password=Secret("env:X"))  # fmt: skip
        await watch.read_all([without_credentials, old])
        assert watch.states == {}  # no credentials, or a configured version before X15.5
    finally:
        await box.stop()


async def test_the_daemon_exports_the_client_certificate_of_a_lab_box(tmp_path: Path) -> None:
    """`expressway-certd run` against the lab: the C at X15.5 gets cert_kind="client" series,
    the E at X15.4 says not_applicable (its configured version: no API call)."""
    async with Lab(tmp_path / "lab", restart_seconds=0.2, c_version="X15.5") as lab:
        port = free_port()
        path = lab.write_config(tmp_path / "certd.toml")
        path.write_text(
            path.read_text().replace(
                "[daemon]\n", f'[daemon]\nlisten = "127.0.0.1:{port}"\npoll_interval = "30s"\n', 1
            )
        )
        daemon = await DaemonProcess(path, port).start()
        try:
            text = await daemon.wait_for(
                "/metrics", lambda s, b: s == 200 and 'cert_kind="client"' in b, timeout=60
            )
            got = samples(text)
            status = {
                dict(labels)["target"]: dict(labels)["status"]
                for (name, labels), v in got.items()
                if name == "expressway_client_cert_status" and v == 1.0
            }
            assert status == {"expe-c1": "ok"}  # expe-e1 is configured at X15.4: not read
            client = {
                dict(labels)["target"]: v
                for (name, labels), v in got.items()
                if name == "expressway_cert_not_after_timestamp_seconds"
                and dict(labels)["cert_kind"] == "client"
            }
            expiry = lab.expressway_c.client_cert.not_valid_after_utc.timestamp()
            assert client == {"expe-c1": expiry}
        finally:
            await daemon.stop()
