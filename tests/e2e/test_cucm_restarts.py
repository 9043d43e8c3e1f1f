"""Unified CM restarts (issue 9 part 3) on the lab with a real daemon process: the new CA is
uploaded to every node in the trust stage, but Cisco CallManager, Tftp and Tomcat restart only
in the `ucm-restart` stage, after the approval gate and inside the maintenance window, node by
node (publisher first). Progress is persisted per node and service: a daemon SIGKILLed between
two restarts is replaced, and the simulators see every restart exactly once."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from expressway_certd_lab.cucm import CucmSim
from expressway_certd_lab.est import ESTSimulator
from expressway_certd_lab.renewal import add_unified_cm_keys, est_ca_section
from expressway_certd_lab.topology import Lab

from expressway_certd.renewers.cucm import DEFAULT_RESTART_SERVICES
from expressway_certd.renewers.pipeline import STAGES
from tests.e2e.daemon_lab import LabDaemon, daemon_config
from tests.helpers import free_port
from tests.keypool import KEY_POOL

SERVICES = ("Cisco CallManager", "Cisco Tftp", "Cisco Tomcat")  # Tomcat last


def begun(lab: Lab) -> list[tuple[str, str]]:
    return [(node, service) for node, service, edge in lab.cucm.restart_log if edge == "begin"]


def assert_one_node_at_a_time(lab: Lab) -> None:
    """Every restart ends before the next begins (so nodes never overlap)."""
    log = lab.cucm.restart_log
    assert all(
        log[i][2] == "begin" and log[i + 1][2] == "end" and log[i][:2] == log[i + 1][:2]
        for i in range(0, len(log), 2)
    ), log


async def approve(daemon: LabDaemon, renewal_id: str) -> None:
    headers = {"Authorization": f"Bearer {daemon.token}"}
    url = f"{daemon.base}/api/v1/renewals/{renewal_id}/approve"
    async with aiohttp.ClientSession() as session, session.post(url, headers=headers) as resp:
        assert resp.status == 200, await resp.text()


def new_ca_in_trust(node: CucmSim, est: ESTSimulator) -> bool:
    root = est.root.cert
    return all(root in node.trust[store] for store in ("tomcat", "callmanager"))


async def test_sigkill_between_two_service_restarts_restarts_each_once(tmp_path: Path) -> None:
    assert set(SERVICES) == set(DEFAULT_RESTART_SERVICES)
    est = ESTSimulator().start()
    try:
        async with Lab(
            tmp_path / "lab",
            csr_keys=KEY_POOL,
            cucm_nodes=2,
            restart_seconds=0.2,
            service_restart_seconds=0.05,
        ) as lab:
            port = free_port()
            config = daemon_config(
                lab,
                tmp_path,
                {"expe-c1": 'ca = "lab-est", key_length = 2048'},
                est_ca_section(est, tmp_path),
                port=port,
                trust=[est.root.cert],
            )
            publisher, subscriber = (n.host for n in lab.cucm_nodes)
            # Killed right after Tftp restarted on the publisher was persisted.
            point = f"expe-c1:ucm-restart:{publisher}:Cisco Tftp"
            async with LabDaemon(config, port, kill_at=point) as daemon:
                started = await daemon.renew("expe-c1")
                assert started is not None
                assert await daemon.wait_killed() == -9, daemon.output()
            assert begun(lab) == [("cucm1", "Cisco CallManager"), ("cucm1", "Cisco Tftp")]
            async with LabDaemon(config, port) as daemon:
                done = await daemon.wait_renewal(started["id"], ("done",), timeout=60)
            advanced = [s["stage"] for s in done["steps"] if s["result"] == "advance"]
            assert advanced == list(STAGES)
            # Publisher first, Tomcat last on each node, nothing restarted twice.
            assert begun(lab) == [("cucm1", s) for s in SERVICES] + [("cucm2", s) for s in SERVICES]
            for node in lab.cucm_nodes:
                restarted = {name: n for name, n in node.restarts.items() if n}
                assert restarted == dict.fromkeys(SERVICES, 1), node.name
                assert new_ca_in_trust(node, est), node.name
            assert_one_node_at_a_time(lab)
            message = [s["message"] for s in done["steps"] if s["stage"] == "ucm-restart"][-1]
            assert f"{publisher} restarted Cisco CallManager, Cisco Tftp, Cisco Tomcat" in message
            assert f"{subscriber} restarted Cisco CallManager, Cisco Tftp, Cisco Tomcat" in message
    finally:
        est.stop()


async def test_restarts_wait_for_the_window_after_trust_and_approval(tmp_path: Path) -> None:
    """A window that is closed now: the trust is on every node at once, no service restarts,
    the renewal waits at ucm-restart (and the Expressway is not restarted either)."""
    est = ESTSimulator().start()
    try:
        async with Lab(
            tmp_path / "lab",
            csr_keys=KEY_POOL,
            cucm_nodes=2,
            restart_seconds=0.2,
            service_restart_seconds=0.05,
        ) as lab:
            port = free_port()
            config = daemon_config(
                lab,
                tmp_path,
                {"expe-c1": 'ca = "lab-est", key_length = 2048, approval = "manual"'},
                est_ca_section(est, tmp_path),
                port=port,
                trust=[est.root.cert],
            )
            # Closed for a long time: the next 29 February, 03:00 UTC.
            text = config.read_text()
            config.write_text(
                add_unified_cm_keys(
                    text, "cucm1",
                    'maintenance_window = { cron = "0 3 29 2 *", timezone = "UTC", '
                    'duration = "1h" }',
                )
            )  # fmt: skip
            async with LabDaemon(config, port) as daemon:
                started = await daemon.renew("expe-c1")
                assert started is not None
                row = await daemon.wait_renewal(started["id"], ("waiting",), stage="approve")
                for node in lab.cucm_nodes:
                    assert new_ca_in_trust(node, est), node.name
                assert begun(lab) == []
                await approve(daemon, row["id"])
                row = await daemon.wait_renewal(started["id"], ("waiting",), stage="ucm-restart")
                assert "waits for the maintenance window (0 3 29 2 * UTC)" in row["message"]
                assert begun(lab) == []
                assert lab.expressway_c.restart_count == 0
    finally:
        est.stop()


async def test_a_service_not_activated_is_skipped_not_an_error(tmp_path: Path) -> None:
    est = ESTSimulator().start()
    try:
        async with Lab(
            tmp_path / "lab",
            csr_keys=KEY_POOL,
            restart_seconds=0.2,
            service_restart_seconds=0.05,
            cucm_deactivated=("Cisco Tftp",),
        ) as lab:
            port = free_port()
            config = daemon_config(
                lab,
                tmp_path,
                {"expe-c1": 'ca = "lab-est", key_length = 2048'},
                est_ca_section(est, tmp_path),
                port=port,
                trust=[est.root.cert],
            )
            async with LabDaemon(config, port) as daemon:
                started = await daemon.renew("expe-c1")
                assert started is not None
                done = await daemon.wait_renewal(started["id"], ("done",), timeout=60)
            message = [s["message"] for s in done["steps"] if s["stage"] == "ucm-restart"][-1]
            assert message == (
                f"Unified CM cucm1: {lab.cucm.host} restarted Cisco CallManager, Cisco Tomcat "
                "(not activated: Cisco Tftp)"
            )
            assert begun(lab) == [("cucm1", "Cisco CallManager"), ("cucm1", "Cisco Tomcat")]
    finally:
        est.stop()
