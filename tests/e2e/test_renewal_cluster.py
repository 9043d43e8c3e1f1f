"""A cluster of two Expressway-C peers, both due at once: the daemon renews both, each with its
own CSR and its own certificate (peer FQDN + cluster FQDN), and restarts them one at a time:
by the simulators' own clocks the restart windows do not overlap, and the first peer was back
serving its new certificate before the second went down."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from expressway_certd_lab.est import ESTSimulator
from expressway_certd_lab.renewal import est_ca_section
from expressway_certd_lab.topology import Lab

from expressway_certd.renewers.pipeline import STAGES
from tests.e2e.daemon_lab import BoxCounts, LabDaemon, daemon_config
from tests.helpers import free_port
from tests.keypool import KEY_POOL


async def test_cluster_peers_restart_one_at_a_time(tmp_path: Path) -> None:
    est = ESTSimulator().start()
    try:
        async with Lab(
            tmp_path / "lab",
            csr_keys=KEY_POOL,
            c_peers=2,
            cert_days=10,
            restart_seconds=1.0,
            service_restart_seconds=0.05,
        ) as lab:
            peers = lab.expressway_c_peers
            port = free_port()
            config = daemon_config(
                lab,
                tmp_path,
                {p.name: 'ca = "lab-est", key_length = 2048' for p in peers},
                est_ca_section(est, tmp_path),
                port=port,
            )
            async with LabDaemon(config, port) as daemon:
                rows = await daemon.wait_for(
                    "/api/v1/renewals", lambda status, body: status == 200 and len(body) == 2
                )
                done = {
                    r["target"]: await daemon.wait_renewal(r["id"], ("done",), timeout=60)
                    for r in rows
                }

            for peer in peers:
                renewal = done[peer.name]
                advanced = [s["stage"] for s in renewal["steps"] if s["result"] == "advance"]
                assert advanced == list(STAGES), renewal["steps"]
                assert BoxCounts.of(peer) == BoxCounts(csrs=1, uploads=1, restarts=1)
                new = peer.served_cert
                assert renewal["installed_sha256"] == new.fingerprint(hashes.SHA256()).hex()
                sans = new.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted(
                    [str(peer.fqdn), lab.cluster_fqdn]
                )
            assert est.submissions == 2
            assert peers[0].served_cert.public_key() != peers[1].served_cert.public_key()

            # in the order they went down: each came back serving its new certificate, and the
            # first was back before the second went down
            order = sorted(peers, key=lambda p: p.restarts[0].down_at)
            for peer in order:
                assert peer.restarts[0].served_sha256 == done[peer.name]["installed_sha256"]
            first, second = (p.restarts[0] for p in order)
            assert first.up_at < second.down_at, (first, second)
            for zone in lab.traversal_zones:
                assert zone.status() == ("Active", "")
    finally:
        est.stop()
