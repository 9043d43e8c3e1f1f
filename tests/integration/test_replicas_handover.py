"""A renewal hands over at once when the replica working it is SIGKILLed (issue 11 part 1).

Two `expressway-certd run` replicas share one real PostgreSQL and renew an Expressway of the
lab through the lab's EST CA. Both run through tests/e2e/seamed_daemon.py with the same fault
seam, armed to SIGKILL the process right after the renewal's csr stage is persisted (so
whichever replica works the renewal dies there, holding its lease for three more minutes),
and each reports a host name of its own: their lease owner ids ("host:pid:token") name two
machines, so the survivor cannot use the same-host shortcut (a dead process of this host).
The survivor resumes the renewal as soon as the dead replica's database session is gone
(its session lock is free; its log says so, naming the dead replica's owner id) and finishes
it before the dead replica's lease would have run out (that lease was claimed after the
preflight step was persisted, so it ran at least until then + LEASE: read from the steps,
not from the row, which the survivor may have rewritten before the test looks); the box sees
exactly one CSR, one upload and one restart, the CA one submission.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from expressway_certd_lab.est import ESTSimulator
from expressway_certd_lab.renewal import est_ca_section
from expressway_certd_lab.topology import Lab

from expressway_certd.monitor.store import Store, renewals
from expressway_certd.renewers.pipeline import LEASE, STAGES
from tests.e2e.daemon_lab import BoxCounts, LabDaemon, daemon_config
from tests.helpers import free_port
from tests.keypool import KEY_POOL
from tests.pg import fresh_database

pytestmark = pytest.mark.integration

HOSTS = ("replica-host-a", "replica-host-b")


def replica_config(lab: Lab, directory: Path, target: str, est: ESTSimulator, url: str) -> Path:
    """The lab's config on the shared PostgreSQL, with a data directory of its own."""
    directory.mkdir()
    path = daemon_config(
        lab,
        directory,
        {target: 'ca = "lab-est", key_length = 2048'},
        est_ca_section(est, directory),
        port=free_port(),
    )
    text = path.read_text()
    for key, value in (("state", url), ("data_dir", str(directory / "data"))):
        old = next(line for line in text.splitlines() if line.startswith(f"{key} = "))
        text = text.replace(old, f'{key} = "{value}"', 1)
    path.write_text(text)
    return path


def port_of(config: Path) -> int:
    line = next(x for x in config.read_text().splitlines() if x.startswith("listen = "))
    return int(line.rsplit(":", 1)[1].strip('"'))


async def lease_of(store: Store, renewal_id: str) -> tuple[str | None, datetime | None]:
    async with store.engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(renewals.c.lease_owner, renewals.c.lease_until).where(
                    renewals.c.id == renewal_id
                )
            )
        ).one()
    until = row[1]
    return row[0], (until if until is None or until.tzinfo else until.replace(tzinfo=UTC))


@pytest.mark.timeout(400)
async def test_a_killed_replicas_renewal_is_finished_by_the_survivor_before_its_lease_ends(
    tmp_path: Path, pg_server: str
) -> None:
    est = ESTSimulator().start()
    try:
        url = fresh_database(pg_server)
        async with Lab(
            tmp_path / "lab",
            csr_keys=KEY_POOL,
            restart_seconds=0.2,
            service_restart_seconds=0.05,
        ) as lab:
            await handover(tmp_path, lab, est, url)
    finally:
        est.stop()


async def handover(tmp_path: Path, lab: Lab, est: ESTSimulator, url: str) -> None:
    box = lab.expressway_c
    target = box.name
    configs = [replica_config(lab, tmp_path / h, target, est, url) for h in HOSTS]
    daemons = [
        LabDaemon(c, port_of(c), kill_at=f"{target}:csr", host=h)
        for c, h in zip(configs, HOSTS, strict=True)
    ]
    store = await Store.open(url, migrate=False)
    try:
        for d in daemons:
            await d.start()
        for d in daemons:
            await d.ready()
            await d.wait_for(  # both see both, so the split has settled
                "/readyz",
                lambda status, body: status == 200 and len(body["replica"]["live_replicas"]) == 2,
                60,
            )
        ids = [(await d.get("/readyz"))[1]["replica"]["id"] for d in daemons]
        assert [i.split(":")[0] for i in ids] == list(HOSTS)  # two "machines"
        before, submissions = BoxCounts.of(box), est.submissions

        started = await daemons[0].renew(target)
        assert started is not None
        # Whichever replica works the renewal dies right after persisting its csr stage.
        procs = [d.proc for d in daemons]
        assert all(p is not None for p in procs)
        waits = {asyncio.ensure_future(p.wait()): i for i, p in enumerate(procs) if p}
        done, pending = await asyncio.wait(waits, timeout=120, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        assert len(done) == 1, [d.output()[-3000:] for d in daemons]
        killed_at = time.monotonic()
        victim = waits[done.pop()]
        survivor = daemons[1 - victim]
        assert daemons[victim].proc is not None and daemons[victim].proc.returncode == -9

        finished = await survivor.wait_renewal(
            started["id"], ("done",), timeout=LEASE.total_seconds() * 0.75
        )
        print(f"renewal finished {time.monotonic() - killed_at:.1f} s after the kill")
        advanced = [s for s in finished["steps"] if s["result"] == "advance"]
        assert [s["stage"] for s in advanced] == list(STAGES), finished["steps"]  # each once
        assert not [s for s in finished["steps"] if s["result"] in ("failed", "blocked")]
        # The dead replica claimed its lease for the csr stage after persisting preflight, so
        # that lease ran until preflight's time + LEASE at least: finished before then.
        preflight = advanced[STAGES.index("preflight")]
        dead_lease_until = datetime.fromisoformat(preflight["at"]) + LEASE
        assert datetime.fromisoformat(finished["updated_at"]) < dead_lease_until
        assert BoxCounts.of(box).since(before) == BoxCounts(csrs=1, uploads=1, restarts=1)
        assert est.submissions - submissions == 1
        # Taken over from the dead replica, another host, because its session was gone.
        logged = [json.loads(x) for x in survivor.output().splitlines() if x.startswith("{")]
        takeovers = [
            line
            for line in logged
            if line.get("lease") == f"renewal {started['id']}"
            and line["event"] == "taking over the lease of a process whose database session is gone"
        ]
        assert len(takeovers) == 1, takeovers
        assert takeovers[0]["holder"].startswith(f"{HOSTS[victim]}:"), takeovers
        for _ in range(100):  # the survivor lets go right after persisting "done"
            if await lease_of(store, started["id"]) == (None, None):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"lease still held: {await lease_of(store, started['id'])}")
    finally:
        await store.close()
        for d in daemons:
            if d.proc is not None and d.proc.returncode is None:
                await d.stop()
