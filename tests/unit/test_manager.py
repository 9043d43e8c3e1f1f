"""The renewal manager's policy inputs: ARI windows, the installed certificate, jitter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from lab.pki import cert_pem
from monitor.config import load_config
from monitor.events import EventBus
from monitor.facts import facts_from_x509
from monitor.probe import Prober, TrustStore
from monitor.store import RenewalRow, Store
from renewers.ca.base import RenewalWindow
from renewers.manager import RenewalManager, stable_jitter


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


def config(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text(
        f'[daemon]\nstate = "{tmp_path / "s.db"}"\n'
        '[[expressway]]\nname = "e1"\naddress = "e1.example.com"\n'
        'renewal = { ca = "acme" }\n'
        '[ca.acme]\nkind = "manual"\n'
    )
    return load_config(path)


async def make(tmp_path, fake):
    cfg = config(tmp_path)
    store = await Store.open(cfg.daemon.state)
    manager = RenewalManager(
        cfg, store, EventBus(), Prober(TrustStore([])), connectors={"acme": fake}
    )
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
    cfg, store, manager = await make(tmp_path, fake)
    await record_done(store, leaf)
    await manager.load()
    await manager.after_poll(cfg.target("e1"), [facts_from_x509(leaf)])
    latest = manager.latest()["e1"]
    assert latest.active and latest.reason.startswith("ARIWindow")
    assert fake.asked == [leaf.serial_number]
    await store.close()


async def test_fresh_cert_without_ari_is_not_due(tmp_path, make_cert):
    leaf = make_cert("e1.example.com", ["e1.example.com"], days=90)
    cfg, store, manager = await make(tmp_path, FakeCA(None))
    await record_done(store, leaf)
    await manager.load()
    await manager.after_poll(cfg.target("e1"), [facts_from_x509(leaf)])
    assert not manager.latest()["e1"].active
    due = manager.next_due["e1"]
    assert due is not None and due > datetime.now(UTC) + timedelta(days=50)
    await store.close()


async def test_served_cert_replaced_behind_our_back_is_renewed(tmp_path, make_cert):
    ours = make_cert("e1.example.com", ["e1.example.com"], days=90)
    theirs = make_cert("e1.example.com", ["e1.example.com"], days=90)
    cfg, store, manager = await make(tmp_path, FakeCA(None))
    await record_done(store, ours)
    await manager.load()
    await manager.after_poll(cfg.target("e1"), [facts_from_x509(theirs)])
    latest = manager.latest()["e1"]
    assert latest.active and latest.reason.startswith("ServedDiffersFromInstalled")
    await store.close()


def test_jitter_is_stable_per_certificate():
    assert stable_jitter("e1", "ab" * 32) == stable_jitter("e1", "ab" * 32)
    assert stable_jitter("e1", "ab" * 32) != stable_jitter("e1", "cd" * 32)
    assert 0 <= stable_jitter("e2", "ab" * 32) < 1
