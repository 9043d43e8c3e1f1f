"""The monitor's state machine: events on change, persistence, resume without repeats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from expressway_certd_lab.pki import CA, SERVER_AUTH

from expressway_certd.monitor.config import Config, DaemonConfig, Endpoint, ExpresswayConfig
from expressway_certd.monitor.events import EventBus
from expressway_certd.monitor.facts import facts_from_x509
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.monitor.store import Store
from expressway_certd.monitor.watch import Monitor, expiry_window


class Recorder:
    def __init__(self) -> None:
        self.events = []

    async def __call__(self, event) -> None:
        self.events.append(event)

    def types(self) -> list[str]:
        out = [e.type for e in self.events]
        self.events.clear()
        return out


def make_config(tmp_path: Path, ports: list[int], **exp) -> Config:
    endpoints = tuple(Endpoint("127.0.0.1", p, f"svc{p}", sni="expe.example.com") for p in ports)
    target = ExpresswayConfig(
        name="expe", address="expe.example.com", role="e", endpoints=endpoints, **exp
    )
    daemon = DaemonConfig(state=f"sqlite+aiosqlite:///{tmp_path / 'state.db'}", history=5)
    return Config(path=tmp_path / "c.toml", daemon=daemon, expressways=(target,))


async def start(cfg: Config, trust: Path) -> tuple[Monitor, Recorder, Store]:
    store = await Store.open(cfg.daemon.state, history=cfg.daemon.history)
    bus = EventBus()
    rec = Recorder()
    bus.subscribe(rec)
    bus.subscribe(store.append_event)
    mon = Monitor(cfg, Prober(TrustStore([trust]), timeout=2), store, bus)
    await mon.load()
    return mon, rec, store


async def test_events_for_change_failure_recovery(tmp_path, served, trust_bundle):
    s = await served(cn="expe.example.com", sans=["expe.example.com"], days=200)
    cfg = make_config(tmp_path, [s.port])
    mon, rec, store = await start(cfg, trust_bundle)
    target = cfg.expressways[0]

    await mon.poll(target)
    assert rec.types() == []  # first sight of a healthy cert: nothing to announce
    state = mon.states[("expe", "127.0.0.1", s.port)]
    assert state.ok and state.chain_verified and state.san_problem is None
    assert state.eku_problem is None

    await mon.poll(target)
    assert rec.types() == []  # unchanged

    # Renewed by a new CA with a changed SAN list: the step-D situation
    new_ca = CA.create("New Root")
    s.serve(
        cn="expe.example.com", sans=["expe.example.com", "new.example.com"], days=200, ca=new_ca
    )
    await mon.poll(target)
    events = {e.type: e for e in rec.events}
    assert set(rec.types()) == {"CertChanged", "SANsChanged", "IssuerChanged"}
    assert events["SANsChanged"].added == ("DNS:new.example.com",)
    assert events["IssuerChanged"].new_aki != events["IssuerChanged"].old_aki
    assert mon.states[state.key].chain_verified is False  # new CA not in the trust bundle

    await s.listener.stop()
    await mon.poll(target)
    failed = [e for e in rec.events if e.type == "ProbeFailed"]
    assert rec.types() == ["ProbeFailed"] and failed[0].error_class == "refused"
    await mon.poll(target)
    assert rec.types() == []  # still failing: no repeat
    # the last good certificate is kept while the probe fails (metrics keep not_after)
    assert mon.states[state.key].facts is not None and not mon.states[state.key].ok

    await s.listener.start()
    await mon.poll(target)
    assert rec.types() == ["ProbeRecovered"]

    audit = await store.events(target="expe")
    assert [a.type for a in audit][:2] == ["ProbeRecovered", "ProbeFailed"]
    history = await store.history_for("expe", "127.0.0.1", s.port)
    assert len(history) <= cfg.daemon.history
    await store.close()


async def test_expiry_windows_fire_once_and_survive_restart(tmp_path, served, trust_bundle):
    s = await served(cn="expe.example.com", sans=["expe.example.com"], days=20)
    cfg = make_config(tmp_path, [s.port])
    mon, rec, store = await start(cfg, trust_bundle)
    await mon.poll(cfg.expressways[0])
    entered = [e for e in rec.events if e.type == "ExpiryWindowEntered"]
    assert [e.window_days for e in entered] == [30]
    assert 19 < entered[0].days_left < 21
    rec.types()
    await mon.poll(cfg.expressways[0])
    assert rec.types() == []
    await store.close()

    # a new process resumes from the store: no repeat of the 30-day announcement
    mon2, rec2, store2 = await start(cfg, trust_bundle)
    assert mon2.states, "state restored from the store"
    await mon2.poll(cfg.expressways[0])
    assert rec2.types() == []

    # a renewal to a cert 6 days from expiry enters the 7-day window
    s.serve(cn="expe.example.com", sans=["expe.example.com"], days=6)
    await mon2.poll(cfg.expressways[0])
    types = rec2.types()
    assert "CertChanged" in types and "ExpiryWindowEntered" in types
    await store2.close()


async def test_eku_and_san_problems(tmp_path, served, trust_bundle):
    s = await served(cn="expe.example.com", sans=["other.example.com"], eku=[SERVER_AUTH])
    cfg = make_config(tmp_path, [s.port], version="X14.3")
    mon, _, store = await start(cfg, trust_bundle)
    await mon.poll(cfg.expressways[0])
    st = next(iter(mon.states.values()))
    assert st.eku_problem and "TLS Web Client Authentication" in st.eku_problem
    assert st.san_problem and "expe.example.com" in st.san_problem
    await store.close()


async def test_removed_endpoint_is_forgotten(tmp_path, served, trust_bundle):
    a = await served(cn="expe.example.com", sans=["expe.example.com"])
    b = await served(cn="expe.example.com", sans=["expe.example.com"])
    cfg = make_config(tmp_path, [a.port, b.port])
    mon, _, store = await start(cfg, trust_bundle)
    await mon.poll(cfg.expressways[0])
    assert len(mon.states) == 2
    await store.close()
    mon2, _, store2 = await start(make_config(tmp_path, [a.port]), trust_bundle)
    assert list(mon2.states) == [("expe", "127.0.0.1", a.port)]
    assert len(await store2.load_endpoints()) == 1
    await store2.close()


@pytest.mark.parametrize(
    ("days_left", "window"),
    [(45, None), (30, 30), (29.9, 30), (13, 14), (6.5, 7), (0.5, 1), (-2, 1)],
)
def test_expiry_window(make_cert, days_left, window):
    now = datetime.now(UTC)
    not_after = now + timedelta(days=days_left)
    cert = make_cert(not_after=not_after, not_before=not_after - timedelta(days=90))
    facts = facts_from_x509(cert)
    assert expiry_window(facts, now, (30, 14, 7, 1)) == window
