"""A forged certificate on a port never starts a renewal (issue 13, finding 1).

An extra endpoint of a lab Expressway-C serves an expired certificate from a CA nobody trusts,
as someone intercepting that port would, while the box's API reports its healthy certificate.
The daemon's wiring (Monitor -> RenewalManager.after_poll) must report drift with both
fingerprints and change nothing: no renewal, no CSR, no CA request, no trust, no restart.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from expressway_certd_lab.est import ESTSimulator
from expressway_certd_lab.pki import CA, write_key_and_chain
from expressway_certd_lab.renewal import add_renewal, est_ca_section
from expressway_certd_lab.tls import LabListener, server_context
from expressway_certd_lab.topology import Lab
from prometheus_client import CollectorRegistry, generate_latest

from expressway_certd.alerts.metrics import RenewalCollector
from expressway_certd.config import load_config
from expressway_certd.monitor.events import Event, EventBus, ServedCertDiffers
from expressway_certd.monitor.facts import facts_from_x509
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.monitor.store import Store
from expressway_certd.monitor.watch import Monitor
from expressway_certd.renewers.manager import RenewalManager
from tests.keypool import KEY_POOL


async def test_forged_cert_on_an_extra_endpoint_starts_no_renewal(tmp_path: Path) -> None:
    est = ESTSimulator().start()
    rogue = CA.create("Intercepting Proxy CA")
    now = datetime.now(UTC)
    forged, key = rogue.issue(
        "expe-c1.lab.example",
        ["expe-c1.lab.example"],
        not_before=now - timedelta(days=60),
        not_after=now - timedelta(days=1),
    )
    cert_file, key_file = write_key_and_chain(tmp_path / "rogue", "forged", forged, key, [])
    listener = await LabListener(context=server_context(cert_file, key_file)).start()
    try:
        async with Lab(tmp_path / "lab", csr_keys=KEY_POOL, restart_seconds=0.3) as lab:
            c, e, cucm = lab.expressway_c, lab.expressway_e, lab.cucm
            text = lab.write_config(tmp_path / "certd.toml").read_text()
            text = add_renewal(text, "expe-c1", 'ca = "lab-est", approval = "auto"')
            text = text.replace(
                "endpoints = [\n",
                f'endpoints = [\n  {{ host = "127.0.0.1", port = {listener.port}, '
                'service = "https" },\n',
                1,
            )
            path = tmp_path / "certd.toml"
            path.write_text(text + est_ca_section(est, tmp_path))
            config = load_config(path)
            store = await Store.open(config.daemon.state)
            bus = EventBus()
            events: list[Event] = []

            async def record(event: Event) -> None:
                events.append(event)

            bus.subscribe(record)
            prober = Prober(TrustStore([lab.ca_bundle_path]), timeout=3)
            monitor = Monitor(config, prober, store, bus)
            manager = RenewalManager(config, store, bus, prober)
            monitor.on_polled.append(manager.after_poll)
            trusted_before = (list(c.trusted_cas), list(e.trusted_cas))
            cucm_before = {k: list(v) for k, v in cucm.trust.items()}
            try:
                await manager.load()
                target = config.target("expe-c1")
                for _ in range(2):
                    observations = await monitor.poll(target)
                    await manager.drain()  # a renewal started would run here
                forged_obs = [o for o in observations if o.endpoint.port == listener.port]
                assert forged_obs[0].ok and forged_obs[0].chain_verified is False

                assert await store.renewals_for("expe-c1") == []
                assert (c.csr_generated, c.uploads, c.restart_count) == (0, 0, 0)
                assert est.submissions == 0
                assert (list(c.trusted_cas), list(e.trusted_cas)) == trusted_before
                assert {k: list(v) for k, v in cucm.trust.items()} == cucm_before
                assert not [ev for ev in events if ev.type == "RenewalDue"]

                drift = [ev for ev in events if isinstance(ev, ServedCertDiffers)]
                assert len(drift) == 1, drift
                installed = facts_from_x509(c.installed.cert).sha256
                assert drift[0].endpoint == listener.address
                assert drift[0].served_sha256 == facts_from_x509(forged).sha256
                assert drift[0].installed_sha256 == installed
                assert drift[0].served_verified is False

                registry = CollectorRegistry()
                registry.register(
                    RenewalCollector(
                        lambda: config.expressways,
                        manager.latest,
                        lambda: manager.next_due,
                        lambda: manager.last_success,
                        lambda: manager.drift,
                    )
                )
                exposition = generate_latest(registry).decode()
                line = next(
                    x
                    for x in exposition.splitlines()
                    if x.startswith("expressway_served_cert_mismatch{")
                )
                assert f'served_sha256="{facts_from_x509(forged).sha256}"' in line
                assert f'installed_sha256="{installed}"' in line
                assert 'verified="false"' in line and line.endswith(" 1.0")
            finally:
                await manager.aclose()
                await store.close()
    finally:
        await listener.stop()
        est.stop()
