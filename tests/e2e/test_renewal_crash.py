"""Crash safety of the daemon's renewals: the daemon (a real process) is SIGKILLed right after it
persisted each point of a renewal (its creation, then every stage), restarted, and each renewal
still finishes exactly once: one renewal row, every stage done once, one CSR generated on the
box, one CA submission, one upload and one restart. Three more kills fall between a stage's
work on the box and its persisting (CSR generated, certificate uploaded, box restarted): the
stage runs again and finds its work already done.

One renewal per kill point, alternating between the two Expressway-C peers of a lab. Daemon k
runs through tests/e2e/seamed_daemon.py, its fault seam armed for renewal k only; it first
finishes renewal k-1 (killed by daemon k-1), then runs renewal k into its kill point. The
last daemon finishes the last renewal. The labs and the EST CAs run in the test process, so
they outlive every daemon; three such chains (each with its own lab, CA and state database)
share the kill points and run side by side to keep the test short.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from expressway_certd_lab.est import ESTSimulator
from expressway_certd_lab.expressway import ExpresswaySim
from expressway_certd_lab.renewal import est_ca_section
from expressway_certd_lab.topology import Lab

from expressway_certd.renewers.pipeline import STAGES
from tests.e2e.daemon_lab import BoxCounts, LabDaemon, daemon_config
from tests.helpers import free_port
from tests.keypool import KEY_POOL

# killed before the outcome was persisted: the stage runs again and says so
UNSAVED = {
    "csr-unsaved": ("csr", "reused the CSR pending on the box"),
    "install-unsaved": ("install", "already installed"),
    "restart-unsaved": ("restart", "already serving the new certificate"),
}
KILL_POINTS = ("start", *STAGES, *UNSAVED)


def sha256(sim: ExpresswaySim) -> str:
    return sim.served_cert.fingerprint(hashes.SHA256()).hex()


# ~20 daemon processes started and killed in turn: minutes on a busy 2-core machine.
@pytest.mark.timeout(600)
async def test_sigkill_at_every_stage_boundary_renews_exactly_once(tmp_path: Path) -> None:
    chains = [KILL_POINTS[i::3] for i in range(3)]
    await asyncio.gather(*(kill_chain(tmp_path / f"chain{i}", c) for i, c in enumerate(chains)))


async def kill_chain(tmp_path: Path, kill_points: Sequence[str]) -> None:
    """One renewal per kill point on one lab, each killed there and finished by the next daemon."""
    est = ESTSimulator().start()
    try:
        async with Lab(
            tmp_path / "lab",
            csr_keys=KEY_POOL,
            c_peers=2,
            restart_seconds=0.2,
            service_restart_seconds=0.05,
        ) as lab:
            peers = lab.expressway_c_peers
            renewal = 'ca = "lab-est", key_length = 2048'
            port = free_port()  # every daemon listens here in turn
            config = daemon_config(
                lab,
                tmp_path,
                {p.name: renewal for p in peers},
                est_ca_section(est, tmp_path),
                port=port,
            )
            # renewal k: (kill point, box, counts before, EST submissions before, id)
            runs: list[tuple[str, ExpresswaySim, BoxCounts, int, str | None]] = []
            for k, point in enumerate((*kill_points, None)):
                kill_at = None if point is None else f"{peers[k % 2].name}:{point}"
                daemon = LabDaemon(config, port, kill_at=kill_at)
                async with daemon:
                    if runs:
                        await finish_previous(daemon, runs[-1], est)
                    if point is None:
                        rows = await daemon.renewals()
                        assert [r["status"] for r in rows] == ["done"] * len(kill_points)
                        break
                    box = peers[k % 2]
                    before = BoxCounts.of(box)
                    submissions = est.submissions
                    started = await daemon.renew(box.name)
                    assert (started is None) == (point == "start")
                    code = await daemon.wait_killed()
                    assert code == -9, f"killed after {point}: exit {code}\n{daemon.output()}"
                    runs.append(
                        (point, box, before, submissions, started["id"] if started else None)
                    )
            assert [run[0] for run in runs] == list(kill_points)
    finally:
        est.stop()


async def finish_previous(
    daemon: LabDaemon,
    run: tuple[str, ExpresswaySim, BoxCounts, int, str | None],
    est: ESTSimulator,
) -> None:
    """The restarted daemon finishes the renewal killed after `point`, exactly once."""
    point, box, before, submissions, renewal_id = run
    rows = await daemon.renewals(box.name)
    active = [r for r in rows if r["status"] not in ("done", "cancelled")]
    assert len(active) <= 1, rows
    if renewal_id is None:  # killed in the API call that created it
        assert len(active) == 1, f"killed after {point}: {rows}"
        renewal_id = active[0]["id"]
    done = await daemon.wait_renewal(renewal_id, ("done",))
    where = f"killed after {point}"
    advanced = [s["stage"] for s in done["steps"] if s["result"] == "advance"]
    assert advanced == list(STAGES), f"{where}: {done['steps']}"
    assert not [s for s in done["steps"] if s["result"] in ("failed", "blocked")], where
    assert BoxCounts.of(box).since(before) == BoxCounts(csrs=1, uploads=1, restarts=1), where
    assert est.submissions - submissions == 1, where
    assert done["installed_sha256"] == sha256(box), where
    assert box.served_cert.issuer == est.issuing.cert.subject, where
    if point in UNSAVED:
        stage, message = UNSAVED[point]
        assert [s["message"] for s in done["steps"] if s["stage"] == stage] == [message], where
