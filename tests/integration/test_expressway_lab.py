"""The Lab helper: linked simulators, a config the daemon accepts, fixed ports on request."""

from __future__ import annotations

import random
import socket
import stat
from datetime import UTC, datetime
from pathlib import Path

from lab.topology import Lab
from monitor.config import load_config
from renewers.cucm import CucmClient, CucmClientConfig
from renewers.expressway import ExpresswayClient, ExpresswayClientConfig


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
        assert "zone UCTraversal: Active" in lab.describe()
