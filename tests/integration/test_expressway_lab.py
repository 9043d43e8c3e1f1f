"""The Lab helper: linked simulators, a config the daemon accepts, fixed ports on request."""

from __future__ import annotations

import random
import socket
import stat
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from expressway_certd_lab.pki import CA
from expressway_certd_lab.topology import Lab

from expressway_certd.config import load_config
from expressway_certd.renewers.cucm import CucmClient, CucmClientConfig
from expressway_certd.renewers.expressway import ExpresswayClient, ExpresswayClientConfig


def free_port_block(size: int) -> int:
    for _ in range(50):
        base = random.randrange(20000, 60000 - size)
        sockets = []
        try:
            for offset in range(size):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free block of ports")


async def test_written_config_reaches_every_simulator(tmp_path: Path) -> None:
    async with Lab(tmp_path / "lab", restart_seconds=0.2, cert_days=10) as lab:
        path = lab.write_config(tmp_path / "certd.toml")
        config = load_config(path)
        c = config.target("expe-c1")
        assert (c.role, c.traversal_peer, c.unified_cm) == ("c", "expe-e1", "cucm1")
        assert [ep.service for ep in config.target("expe-e1").endpoints] == [
            "https", "sip-tls", "traversal", "mra", "xmpp",
        ]  # fmt: skip
        assert config.target("expe-e1").endpoints[-1].starttls == "xmpp"
        for secret in config.secrets():
            file = Path(secret.ref.removeprefix("file:"))
            assert stat.S_IMODE(file.stat().st_mode) == 0o600
        async with ExpresswayClient(ExpresswayClientConfig.from_target(c)) as client:
            cert = await client.server_certificate()
        days = (cert.not_valid_after_utc - datetime.now(UTC)).days
        assert 8 <= days <= 10
        ucm = CucmClientConfig.from_config(config.unified_cm("cucm1"))
        async with CucmClient(ucm) as cucm:
            assert await cucm.trusted(ucm.nodes[0], "callmanager") == [lab.ca.cert]
        assert lab.cucm.password not in path.read_text()


async def test_port_base_gives_fixed_ports(tmp_path: Path) -> None:
    base = free_port_block(23)
    async with Lab(tmp_path / "lab", port_base=base, restart_seconds=0.2) as lab:
        assert lab.expressway_c.api_port == base
        assert lab.expressway_c.listeners == [f"127.0.0.1:{base + 1}", f"127.0.0.1:{base + 2}"]
        assert lab.expressway_e.api_port == base + 10
        assert (lab.cucm.api_port, lab.cucm.soap_port, lab.cucm.ssh_port) == (
            base + 20,
            base + 21,
            base + 22,
        )
        assert "zone UCTraversal (expe-c1 -> expe-e1): Active" in lab.describe()


async def test_expressway_c_cluster(tmp_path: Path) -> None:
    async with Lab(tmp_path / "lab", restart_seconds=0.2, c_peers=2) as lab:
        c1, c2 = lab.expressway_c_peers
        config = load_config(lab.write_config(tmp_path / "certd.toml"))
        assert [e.name for e in config.expressways] == ["expe-c1", "expe-c2", "expe-e1"]
        assert config.target("expe-c2").cluster == "expressway-c.lab.example"
        async with ExpresswayClient(
            ExpresswayClientConfig.from_target(config.target("expe-c2"))
        ) as c:
            assert await c.cluster_peers() == ["expe-c2.lab.example", "expe-c1.lab.example"]
            cert = await c.server_certificate()
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [
            "expe-c2.lab.example",
            "expressway-c.lab.example",
        ]
        assert c1.active.key != c2.active.key  # every peer has its own key
        # A peer with a cert from a CA the E does not trust fails the E's one traversal zone.
        other = CA.create("Other CA")
        cert2, key2 = other.issue(str(c2.fqdn), [str(c2.fqdn), "expressway-c.lab.example"])
        assert key2 is not None
        c2.install_now(cert2, key2)
        e_config = ExpresswayClientConfig.from_target(config.target("expe-e1"))
        async with ExpresswayClient(e_config) as e:
            zones = await e.zones()
        assert [(z.name, z.state) for z in zones] == [("UCTraversal", "Failed")]
        assert "expe-c2" in zones[0].reason
        assert lab.traversal_zones[0].status() == ("Active", "")


def test_lab_knobs_for_issue_9_scenarios(tmp_path: Path) -> None:
    lab = Lab(
        tmp_path / "lab",
        version="X15.5",
        client_cert_days=5,
        e_acme_enabled=True,
        cucm_deactivated=("Cisco Tftp",),
        cucm_webapp_deploy_seconds=2.0,
    )
    c = lab.expressway_c
    assert c.client is not None
    # The client store's copy (from before the last renewal) expires first.
    assert c.client_cert.not_valid_after_utc < c.served_cert.not_valid_after_utc
    assert c.client_cert.public_key() != c.served_cert.public_key()
    assert lab.expressway_e.acme_enabled and lab.expressway_e.client is not None
    assert lab.cucm.deactivated == ("Cisco Tftp",) and lab.cucm.webapp_deploy_seconds == 2.0
