"""Renewals of kind client (the X15.5 client certificate) through the pipeline's own stages,
with a fake box: snapshot reads the client certificate, preflight requires clientAuth, refuses
an ACME CA and a box whose /api/raml lists no client store resources; restart and verify do
not look at the served certificate; one renewal per box at a time, whatever its kind."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from expressway_certd_lab.pki import CA

from expressway_certd.config import load_config
from expressway_certd.monitor.events import EventBus
from expressway_certd.monitor.facts import facts_from_x509
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.monitor.store import Store
from expressway_certd.renewers.ca.base import CACapabilities
from expressway_certd.renewers.expressway import OperationUnsupported, SystemInfo, ZoneState
from expressway_certd.renewers.pipeline import (
    CLIENT,
    SERVER,
    Advance,
    Context,
    Pipeline,
    RenewalRecord,
    Snapshot,
    Wait,
    dry_run,
    kind_of,
    stage_restart,
    stage_verify,
)
from tests.unit.fakes import FakeDevices

CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"
NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def config(tmp_path, client_ca: str = "private"):
    path = tmp_path / "c.toml"
    path.write_text(
        f'[daemon]\nstate = "{tmp_path / "s.db"}"\ndata_dir = "{tmp_path / "data"}"\n'
        '[[expressway]]\nname = "c1"\naddress = "c1.example.com"\nrole = "c"\n'
        f'renewal = {{ ca = "public", client_ca = "{client_ca}" }}\n'
        '[ca.private]\nkind = "manual"\n'
        '[ca.public]\nkind = "acme"\ndirectory = "https://acme.example.net/dir"\n'
        'challenge = "http-01"\n'
    )
    return load_config(path)


class FakeBox:
    """An X15.5 Expressway-C: its server and client certificates, zones, restarts."""

    def __init__(self, server, client, *, client_api: bool = True) -> None:
        self.server, self.client, self.client_api = server, client, client_api
        self.calls: list[str] = []
        self.restarts = 0

    async def system_info(self):
        return SystemInfo(name="c1", version="X15.5", role="c")

    async def server_certificate(self):
        self.calls.append("server_certificate")
        return self.server

    async def client_certificate(self):
        self.calls.append("client_certificate")
        return self.client

    async def check_client_renewal(self):
        self.calls.append("check_client_renewal")
        if not self.client_api:
            raise OperationUnsupported(
                "c1: renew the client certificate: this Expressway (X15.5) lists no resource "
                "to generate client CSR; renew the client certificate in the web UI"
            )

    async def zones(self):
        return [ZoneState("To E", "TraversalClient", "Active")]

    async def acme_scheduler(self, role=None):
        self.calls.append("acme_scheduler")
        return False

    async def server_eku_upload_if_relevant(self, role):
        self.calls.append("server_eku_upload_if_relevant")
        return None

    async def restart(self, *, wait=True, restarted=None):
        self.restarts += 1
        return "api"


class FakeCA:
    def capabilities(self) -> CACapabilities:
        return CACapabilities(kind="fake", ekus=None)


@pytest.fixture
def certs():
    ca = CA.create("Old CA")
    server, _ = ca.issue("c1.example.com", ["c1.example.com"])
    client, _ = ca.issue("c1.example.com", ["c1.example.com"], days=5)
    return server, client


async def plan(tmp_path, box, client_ca="private"):
    cfg = config(tmp_path, client_ca)
    return await dry_run(
        cfg, cfg.target("c1"), FakeCA(), FakeDevices(box), Prober(TrustStore([])), kind=CLIENT
    )


async def test_snapshot_and_preflight_of_a_client_renewal(tmp_path, certs):
    server, client = certs
    box = FakeBox(server, client)
    result = await plan(tmp_path, box)
    assert result.stopped is None
    snap, p = result.record.snapshot, result.record.plan
    assert snap is not None and snap.sha256 == facts_from_x509(client).sha256
    assert p is not None and p.cert_kind == CLIENT
    assert p.required_eku == (CLIENT_AUTH,) and p.eku_rule == "x15.5-client-certificate"
    # the box's own ACME and the X15.4 switch concern the server certificate: not read
    assert "acme_scheduler" not in box.calls and "server_certificate" not in box.calls
    assert "check_client_renewal" in box.calls
    assert result.record.kind == CLIENT


async def test_an_acme_ca_is_refused_for_the_client_certificate(tmp_path, certs):
    result = await plan(tmp_path, FakeBox(*certs), client_ca="public")
    assert result.stopped is not None
    stage, why = result.stopped
    assert stage == "preflight"
    assert "CA 'public' is an ACME CA" in why and "set client_ca" in why


async def test_a_box_without_client_store_resources_blocks_at_preflight(tmp_path, certs):
    result = await plan(tmp_path, FakeBox(*certs, client_api=False))
    assert result.stopped is not None
    stage, why = result.stopped
    assert stage == "preflight" and "lists no resource to generate client CSR" in why
    assert "web UI" in why


def context(tmp_path, box, record: RenewalRecord) -> Context:
    cfg = config(tmp_path)
    return Context(
        renewal_id="r1", target=cfg.target("c1"), config=cfg, devices=FakeDevices(box),
        ca=FakeCA(), ca_name="private", prober=Prober(TrustStore([])), now=lambda: NOW,
        record=record,
    )  # fmt: skip


def installed_record(leaf) -> RenewalRecord:
    facts = facts_from_x509(leaf)
    return RenewalRecord(
        kind=CLIENT,
        snapshot=Snapshot(zones=(ZoneState("To E", "TraversalClient", "Active"),)),
        installed_sha256=facts.sha256,
    )


async def test_restart_of_a_client_renewal_restarts_once_and_records_it(tmp_path, certs):
    server, client = certs
    box = FakeBox(server, client)
    ctx = context(tmp_path, box, installed_record(client))
    outcome = await stage_restart(ctx)
    assert isinstance(outcome, Advance) and "new client certificate" in outcome.detail
    assert box.restarts == 1 and ctx.record.client_restarted is True
    # run again (a retry, a new process): no second restart
    assert await stage_restart(ctx) == Advance(
        "already restarted since the client certificate was uploaded"
    )
    assert box.restarts == 1


async def test_verify_of_a_client_renewal_reads_the_client_certificate(tmp_path, certs):
    server, client = certs
    done = await stage_verify(context(tmp_path, FakeBox(server, client), installed_record(client)))
    assert isinstance(done, Advance) and "client certificate" in done.detail
    assert "1 zones Active" in done.detail
    # the box still shows another client certificate: wait (then block at the deadline)
    other = await stage_verify(context(tmp_path, FakeBox(server, server), installed_record(client)))
    assert isinstance(other, Wait) and "shows client certificate" in other.why


async def test_one_renewal_per_box_whatever_its_kind(tmp_path):
    cfg = config(tmp_path)
    store = await Store.open(cfg.daemon.state)
    try:
        p = Pipeline(cfg, store, EventBus(), Prober(TrustStore([])), {})
        client = await p.start("c1", "client certificate expires", kind=CLIENT)
        assert kind_of(client) == CLIENT
        again = await p.start("c1", "server certificate expires", kind=SERVER)
        assert again.id == client.id and kind_of(again) == CLIENT  # the active one
        with pytest.raises(ValueError, match="unknown renewal kind"):
            await p.start("c1", "t", kind="both")
        cancelled = await p.cancel(client.id, "test")
        server = await p.start("c1", "server certificate expires")
        assert server.id != cancelled.id and kind_of(server) == SERVER
        assert server.data == {}  # a server row stores no kind key
    finally:
        await store.close()
