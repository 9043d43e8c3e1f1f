"""The renewal manager's policy inputs: ARI windows, the installed certificate, jitter, and
what it refuses to act on: served certificates that the box itself does not report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from expressway_certd_lab.pki import CA, cert_pem

from expressway_certd.config import load_config
from expressway_certd.monitor.errors import DeviceError
from expressway_certd.monitor.events import Event, EventBus
from expressway_certd.monitor.facts import facts_from_x509
from expressway_certd.monitor.policy import ServedCert
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.monitor.store import RenewalRow, Store
from expressway_certd.renewers.ca.base import RenewalWindow
from expressway_certd.renewers.manager import RenewalManager, stable_jitter
from tests.unit.fakes import FakeDevices


class FakeCA:
    """Only what the manager asks of a connector before a renewal starts."""

    def __init__(self, window: RenewalWindow | None) -> None:
        self.window = window
        self.asked: list[str] = []

    async def renewal_window(self, leaf):
        self.asked.append(leaf.serial_number)
        return self.window

    async def aclose(self) -> None:
        return None


class FakeBox:
    """The box's API as far as the manager uses it: the installed server certificate."""

    def __init__(self, cert) -> None:
        self.cert = cert
        self.reads = 0
        self.down = False

    async def server_certificate(self):
        self.reads += 1
        if self.down:
            raise DeviceError("e1: GET /api/provisioning/certs/server: connection refused")
        return self.cert


def served(cert, *, verified: bool = True, endpoint: str = "e1.example.com:443") -> ServedCert:
    return ServedCert(endpoint, "https", facts_from_x509(cert), verified)


def config(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text(
        f'[daemon]\nstate = "{tmp_path / "s.db"}"\n'
        '[[expressway]]\nname = "e1"\naddress = "e1.example.com"\n'
        'renewal = { ca = "acme" }\n'
        '[ca.acme]\nkind = "manual"\n'
    )
    return load_config(path)


async def make(tmp_path, fake, box: FakeBox | None = None, events: list[Event] | None = None):
    cfg = config(tmp_path)
    store = await Store.open(cfg.daemon.state)
    bus = EventBus()
    if events is not None:

        async def record(event: Event) -> None:
            events.append(event)

        bus.subscribe(record)
    manager = RenewalManager(
        cfg, store, bus, Prober(TrustStore([])), connectors={"acme": fake},
        devices=FakeDevices(box or FakeBox(None)),
    )  # fmt: skip
    manager.spawn = lambda renewal_id: None  # decide only; do not drive a box
    return cfg, store, manager


async def record_done(store, leaf):
    now = datetime.now(UTC)
    row = RenewalRow(
        id="r1", target="e1", status="done", stage="verify", reason="t", created_at=now,
        updated_at=now, next_at=None, attempts=0, message="",
        data={"issued": {"leaf_pem": cert_pem(leaf).decode()},
              "installed_sha256": facts_from_x509(leaf).sha256},
    )  # fmt: skip
    await store.create_renewal(row)


async def test_ari_window_starts_a_renewal_early(tmp_path, make_cert):
    leaf = make_cert("e1.example.com", ["e1.example.com"], days=90)
    now = datetime.now(UTC)
    fake = FakeCA(RenewalWindow(now - timedelta(hours=1), now, now + timedelta(hours=6)))
    cfg, store, manager = await make(tmp_path, fake, FakeBox(leaf))
    await record_done(store, leaf)
    await manager.load()
    await manager.after_poll(cfg.target("e1"), [served(leaf)])
    latest = manager.latest()["e1"]
    assert latest.active and latest.reason.startswith("ARIWindow")
    assert fake.asked == [leaf.serial_number]
    await store.close()


async def test_fresh_cert_without_ari_is_not_due(tmp_path, make_cert):
    leaf = make_cert("e1.example.com", ["e1.example.com"], days=90)
    cfg, store, manager = await make(tmp_path, FakeCA(None), FakeBox(leaf))
    await record_done(store, leaf)
    await manager.load()
    await manager.after_poll(cfg.target("e1"), [served(leaf)])
    assert not manager.latest()["e1"].active
    due = manager.next_due["e1"]
    assert due is not None and due > datetime.now(UTC) + timedelta(days=50)
    await store.close()


async def test_cert_replaced_behind_our_back_is_renewed(tmp_path, make_cert):
    """The box's own API reports another certificate than the one this tool installed."""
    ours = make_cert("e1.example.com", ["e1.example.com"], days=90)
    theirs = make_cert("e1.example.com", ["e1.example.com"], days=90)
    cfg, store, manager = await make(tmp_path, FakeCA(None), FakeBox(theirs))
    await record_done(store, ours)
    await manager.load()
    await manager.after_poll(cfg.target("e1"), [served(theirs)])
    latest = manager.latest()["e1"]
    assert latest.active and latest.reason.startswith("ServedDiffersFromInstalled")
    await store.close()


def test_jitter_is_stable_per_certificate():
    assert stable_jitter("e1", "ab" * 32) == stable_jitter("e1", "ab" * 32)
    assert stable_jitter("e1", "ab" * 32) != stable_jitter("e1", "cd" * 32)
    assert 0 <= stable_jitter("e2", "ab" * 32) < 1


# ---- served certificates are network input (issue 13, finding 1) ----------------------------


async def test_forged_expired_cert_on_a_port_starts_nothing(tmp_path, make_cert):
    """Someone answering on a port with an expired certificate from a foreign CA, while the
    box's API reports its healthy certificate: a drift event with both fingerprints, no
    renewal."""
    ours = make_cert("e1.example.com", ["e1.example.com"], days=90)
    rogue = CA.create("Rogue Root CA")
    forged = make_cert(
        "e1.example.com", ["e1.example.com"], ca=rogue,
        not_before=datetime.now(UTC) - timedelta(days=30),
        not_after=datetime.now(UTC) - timedelta(days=1),
    )  # fmt: skip
    events: list[Event] = []
    box = FakeBox(ours)
    cfg, store, manager = await make(tmp_path, FakeCA(None), box, events)
    await record_done(store, ours)
    await manager.load()
    polled = [served(ours), served(forged, verified=False, endpoint="e1.example.com:8443")]
    await manager.after_poll(cfg.target("e1"), polled)
    await manager.after_poll(cfg.target("e1"), polled)  # announced once while it lasts
    assert not manager.latest()["e1"].active
    assert await store.renewals_for("e1", active_only=True) == []
    drift = [e for e in events if e.type == "ServedCertDiffers"]
    assert len(drift) == 1 and not [e for e in events if e.type == "RenewalDue"]
    assert drift[0].endpoint == "e1.example.com:8443"
    assert drift[0].served_sha256 == facts_from_x509(forged).sha256
    assert drift[0].installed_sha256 == facts_from_x509(ours).sha256
    assert drift[0].served_verified is False
    sha_forged, sha_ours = facts_from_x509(forged).sha256, facts_from_x509(ours).sha256
    assert sha_forged in drift[0].summary() and sha_ours in drift[0].summary()
    key = ("e1", "e1.example.com:8443")
    assert manager.drift[key].served_sha256 == sha_forged
    assert manager.drift[key].installed_sha256 == sha_ours
    # the port serves the box's certificate again: the drift ends
    await manager.after_poll(cfg.target("e1"), [served(ours)])
    assert manager.drift == {}
    await store.close()


async def test_unverified_cert_expiring_soon_does_not_trigger(tmp_path, make_cert):
    ours = make_cert("e1.example.com", ["e1.example.com"], days=300)
    rogue = CA.create("Rogue Root CA")
    soon = make_cert("e1.example.com", ["e1.example.com"], ca=rogue, days=3)
    cfg, store, manager = await make(tmp_path, FakeCA(None), FakeBox(ours))
    await manager.load()
    await manager.after_poll(cfg.target("e1"), [served(soon, verified=False)])
    assert "e1" not in manager.latest()
    assert ("e1", "e1.example.com:443") in manager.drift
    await store.close()


async def test_verified_served_cert_that_is_not_installed_does_not_trigger(tmp_path, make_cert):
    """Even a chain that verifies decides nothing unless it is the box's certificate."""
    ours = make_cert("e1.example.com", ["e1.example.com"], days=300)
    other = make_cert("e1.example.com", ["e1.example.com"], days=3)
    cfg, store, manager = await make(tmp_path, FakeCA(None), FakeBox(ours))
    await manager.load()
    await manager.after_poll(cfg.target("e1"), [served(other, verified=True)])
    assert "e1" not in manager.latest()
    await store.close()


async def test_box_that_reports_an_expiring_cert_is_renewed(tmp_path, make_cert):
    """The box's API is the authority: an expired certificate (whose chain no longer
    verifies) that the box reports installed is renewed."""
    expired = make_cert(
        "e1.example.com", ["e1.example.com"],
        not_before=datetime.now(UTC) - timedelta(days=90),
        not_after=datetime.now(UTC) - timedelta(hours=1),
    )  # fmt: skip
    cfg, store, manager = await make(tmp_path, FakeCA(None), FakeBox(expired))
    await manager.load()
    await manager.after_poll(cfg.target("e1"), [served(expired, verified=False)])
    latest = manager.latest()["e1"]
    assert latest.active and latest.reason.startswith("Expired")
    assert manager.drift == {}
    await store.close()


async def test_unreadable_box_decides_nothing(tmp_path, make_cert):
    expired = make_cert(
        "e1.example.com", ["e1.example.com"],
        not_before=datetime.now(UTC) - timedelta(days=90),
        not_after=datetime.now(UTC) - timedelta(hours=1),
    )  # fmt: skip
    box = FakeBox(expired)
    box.down = True
    cfg, store, manager = await make(tmp_path, FakeCA(None), box)
    await manager.load()
    await manager.after_poll(cfg.target("e1"), [served(expired)])
    assert "e1" not in manager.latest() and box.reads == 1
    await store.close()


async def test_box_read_is_cached_while_ports_agree_and_refreshed_before_a_start(
    tmp_path, make_cert
):
    leaf = make_cert("e1.example.com", ["e1.example.com"], days=300)
    box = FakeBox(leaf)
    cfg, store, manager = await make(tmp_path, FakeCA(None), box)
    await manager.load()
    for _ in range(3):
        await manager.after_poll(cfg.target("e1"), [served(leaf)])
    assert box.reads == 1
    # a cached read that says "due" is confirmed by a fresh one before anything starts
    due = manager.next_due["e1"]
    assert due is not None
    manager.clock = lambda: due - timedelta(minutes=10)
    await manager.after_poll(cfg.target("e1"), [served(leaf)])
    assert box.reads == 2 and "e1" not in manager.latest()  # older than BOX_REFRESH: read
    manager.clock = lambda: due + timedelta(minutes=10)
    manager.pipeline.clock = manager.clock
    await manager.after_poll(cfg.target("e1"), [served(leaf)])
    assert box.reads == 3  # the 20-minute-old read said due: confirmed before the start
    assert manager.latest()["e1"].active
    await store.close()
