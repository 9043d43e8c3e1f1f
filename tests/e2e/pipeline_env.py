"""Builds a renewal environment on the lab: C/E pair + Unified CM simulators, an EST CA whose
root differs from the lab's (so the AKI changes), and the real pipeline wired to them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from expressway_certd_lab.est import ESTSimulator
from expressway_certd_lab.renewal import add_renewal, est_ca_section
from expressway_certd_lab.topology import Lab

from expressway_certd.config import load_config
from expressway_certd.monitor.config import Config
from expressway_certd.monitor.events import Event, EventBus
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.monitor.store import Store
from expressway_certd.renewers.ca import build_connector
from expressway_certd.renewers.pipeline import ConfiguredDevices, Pipeline
from tests.keypool import KEY_POOL


@dataclass
class Env:
    lab: Lab
    est: ESTSimulator
    config: Config
    store: Store
    pipeline: Pipeline
    events: list[Event]


@asynccontextmanager
async def renewal_env(
    tmp_path: Path,
    *,
    renewal: str = 'ca = "lab-est"',
    version: str = "X15.4",
    target: str = "expe-c1",
) -> AsyncIterator[Env]:
    est = ESTSimulator().start()
    try:
        # Restart delays short (they only make the run wait); tests of timing set their own.
        # CSR keys from the test pool: no RSA-4096 generation per renewal.
        lab = Lab(
            tmp_path / "lab",
            version=version,
            restart_seconds=0.2,
            service_restart_seconds=0.05,
            csr_keys=KEY_POOL,
        )
        async with lab:
            path = lab.write_config(tmp_path / "certd.toml")
            text = add_renewal(path.read_text(), target, renewal) + est_ca_section(est, tmp_path)
            path.write_text(text)
            config = load_config(path)
            store = await Store.open(config.daemon.state)
            bus = EventBus()
            events: list[Event] = []

            async def record(event: Event) -> None:
                events.append(event)

            bus.subscribe(record)
            bus.subscribe(store.append_event)
            trust = TrustStore([lab.ca_bundle_path, est.trust_anchor])
            prober = Prober(trust, timeout=3)
            connectors = {
                name: build_connector(ca, config.daemon.data_dir) for name, ca in config.cas.items()
            }
            # The lab's services restart in a blink: poll their status every 0.1 s, not 2 s.
            devices = ConfiguredDevices(cucm_overrides={"poll_interval": 0.1})
            pipeline = Pipeline(config, store, bus, prober, connectors, devices=devices)
            try:
                yield Env(lab, est, config, store, pipeline, events)
            finally:
                for connector in connectors.values():
                    await connector.aclose()
                await store.close()
    finally:
        est.stop()
