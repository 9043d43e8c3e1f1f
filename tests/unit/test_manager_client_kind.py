"""The renewal manager and the X15.5 client certificate: a client renewal starts on the client
certificate's own expiry (after a fresh read), only with a CA that is not ACME, never while
another renewal of the box runs; the server decision that came during a client renewal is
taken when it ends; what one kind installed never makes the other kind "replaced"."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

from expressway_certd_lab.pki import cert_pem

from expressway_certd.config import load_config
from expressway_certd.monitor.clientcert import STATUS_OK, STATUS_UNPUBLISHED, ClientCertState
from expressway_certd.monitor.events import Event, EventBus, RenewalDue
from expressway_certd.monitor.facts import facts_from_x509
from expressway_certd.monitor.policy import ServedCert
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.monitor.store import RenewalRow, Store
from expressway_certd.renewers.manager import RenewalManager
from expressway_certd.renewers.pipeline import CLIENT, SERVER, kind_of
from tests.unit.fakes import FakeDevices


class FakeCA:
    async def renewal_window(self, leaf):
        return None

    async def aclose(self) -> None:
        return None


class FakeBox:
    """The box's server and client certificates, as the manager reads them."""

    def __init__(self, server, client) -> None:
        self.server, self.client = server, client
        self.client_reads = 0

    async def server_certificate(self):
        return self.server

    async def client_certificate(self):
        self.client_reads += 1
        return self.client


def config(tmp_path: Path, client_ca: str = "private"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "c.toml"
    path.write_text(
        f'[daemon]\nstate = "{tmp_path / "s.db"}"\n'
        '[[expressway]]\nname = "c1"\naddress = "c1.example.com"\nrole = "c"\n'
        f'renewal = {{ ca = "public", client_ca = "{client_ca}" }}\n'
        '[ca.private]\nkind = "manual"\n'
        '[ca.public]\nkind = "acme"\ndirectory = "https://acme.example.net/dir"\n'
        'challenge = "http-01"\n'
    )
    return load_config(path)


async def make(tmp_path, box, *, client_ca="private", events=None):
    cfg = config(tmp_path, client_ca)
    store = await Store.open(cfg.daemon.state)
    bus = EventBus()
    if events is not None:

        async def record(event: Event) -> None:
            events.append(event)

        bus.subscribe(record)
    manager = RenewalManager(
        cfg, store, bus, Prober(TrustStore([])),
        connectors={"public": FakeCA(), "private": FakeCA()}, devices=FakeDevices(box),
    )  # fmt: skip
    manager.spawn = lambda renewal_id: None  # decide only; do not drive a box
    await manager.load()
    return cfg, store, manager


def read(cert, status: str = STATUS_OK) -> ClientCertState:
    facts = facts_from_x509(cert) if status == STATUS_OK else None
    return ClientCertState("c1", "c1.example.com", 443, status, datetime.now(UTC), "X15.5", facts)


def served(cert) -> list[ServedCert]:
    return [ServedCert("c1.example.com:443", "https", facts_from_x509(cert), True)]


async def test_an_expiring_client_certificate_starts_a_client_renewal(tmp_path, make_cert):
    server = make_cert("c1.example.com", ["c1.example.com"], days=300)
    client = make_cert("c1.example.com", ["c1.example.com"], days=5)
    box, events = FakeBox(server, client), []
    cfg, store, manager = await make(tmp_path, box, events=events)
    try:
        await manager.after_client_read(cfg.target("c1"), read(client))
        latest = manager.latest()["c1"]
        assert latest.active and kind_of(latest) == CLIENT
        assert "client certificate" in latest.reason
        assert box.client_reads == 1  # decided again on a fresh read before starting
        assert [type(e) for e in events] == [RenewalDue]
        # the server certificate (300 days) is not due, and a renewal of the box runs anyway
        await manager.after_poll(cfg.target("c1"), served(server))
        assert manager.latest()["c1"].id == latest.id
    finally:
        await store.close()


async def test_no_client_renewal_on_its_own_with_an_acme_ca_or_without_a_read(tmp_path, make_cert):
    client = make_cert("c1.example.com", ["c1.example.com"], days=5)
    box = FakeBox(client, client)
    cfg, store, manager = await make(tmp_path, box, client_ca="public")
    try:
        await manager.after_client_read(cfg.target("c1"), read(client))
        assert "c1" not in manager.latest() and box.client_reads == 0
        # an operator asks (renew --kind client): it starts; preflight refuses the ACME CA
        row = await manager.consider_client(cfg.target("c1"), explicit=True)
        assert row is not None and kind_of(row) == CLIENT
    finally:
        await store.close()
    cfg, store, manager = await make(tmp_path / "b", box)
    try:
        await manager.after_client_read(cfg.target("c1"), read(client, STATUS_UNPUBLISHED))
        assert "c1" not in manager.latest()  # nothing read: nothing decided
    finally:
        await store.close()


async def test_the_server_decision_waits_for_the_client_renewal_then_runs(tmp_path, make_cert):
    server = make_cert("c1.example.com", ["c1.example.com"], days=5)
    client = make_cert("c1.example.com", ["c1.example.com"], days=4)
    box = FakeBox(server, client)
    cfg, store, manager = await make(tmp_path, box)
    try:
        await manager.after_client_read(cfg.target("c1"), read(client))
        first = manager.latest()["c1"]
        await manager.after_poll(cfg.target("c1"), served(server))  # due, but the box is busy
        assert manager.latest()["c1"].id == first.id
        await manager.run_due()
        assert manager.latest()["c1"].id == first.id  # still running: nothing new
        # the client renewal ends (done, its certificate installed)
        new_client = make_cert("c1.example.com", ["c1.example.com"], days=90)
        box.client = new_client
        done = dataclasses.replace(
            first, status="done", stage="verify",
            data={**first.data, "installed_sha256": facts_from_x509(new_client).sha256},
        )  # fmt: skip
        await store.save_renewal(done)
        manager.pipeline.latest["c1"] = done
        await manager.run_due()
        second = manager.latest()["c1"]
        assert second.id != first.id and kind_of(second) == SERVER and second.active
    finally:
        await store.close()


async def test_what_one_kind_installed_does_not_make_the_other_replaced(tmp_path, make_cert):
    server = make_cert("c1.example.com", ["c1.example.com"], days=300)
    client = make_cert("c1.example.com", ["c1.example.com"], days=300)
    cfg, store, manager = await make(tmp_path, FakeBox(server, client))
    now = datetime.now(UTC)
    row = RenewalRow(
        id="r1", target="c1", status="done", stage="verify", reason="t", created_at=now,
        updated_at=now, next_at=None, attempts=0, message="",
        data={"kind": CLIENT, "issued": {"leaf_pem": cert_pem(client).decode()},
              "installed_sha256": facts_from_x509(client).sha256},
    )  # fmt: skip
    try:
        await store.create_renewal(row)
        await manager.load()
        await manager.after_poll(cfg.target("c1"), served(server))
        assert not manager.latest()["c1"].active  # the server certificate is not "replaced"
        await manager.after_client_read(cfg.target("c1"), read(client))
        assert not manager.latest()["c1"].active
        # a client certificate other than the one this tool installed: renewed
        other = make_cert("c1.example.com", ["c1.example.com"], days=300)
        manager.pipeline.devices = FakeDevices(FakeBox(server, other))
        await manager.after_client_read(cfg.target("c1"), read(other))
        latest = manager.latest()["c1"]
        assert latest.active and kind_of(latest) == CLIENT
        assert latest.reason.startswith("ServedDiffersFromInstalled")
    finally:
        await store.close()


async def test_when_both_are_due_the_certificate_that_expires_first_goes_first(tmp_path, make_cert):
    server = make_cert("c1.example.com", ["c1.example.com"], days=6)
    client = make_cert("c1.example.com", ["c1.example.com"], days=3)
    cfg, store, manager = await make(tmp_path, FakeBox(server, client))
    try:
        manager._client["c1"] = facts_from_x509(client)  # the last client read, not acted on
        await manager.after_poll(cfg.target("c1"), served(server))
        latest = manager.latest()["c1"]
        assert latest.active and kind_of(latest) == CLIENT
    finally:
        await store.close()
