"""EST with manual approval at the CA: the CA answers 202 + Retry-After until its operator
approves. The daemon's renewal waits at `issued`, polling with the persisted request, and
finishes after approval with the one CSR it submitted (no second submission, no second CSR)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import hashes
from expressway_certd_lab.est import ESTSimulator
from expressway_certd_lab.renewal import est_ca_section
from expressway_certd_lab.topology import Lab

from expressway_certd.renewers.pipeline import STAGES
from tests.e2e.daemon_lab import BoxCounts, LabDaemon, daemon_config, until
from tests.helpers import free_port
from tests.keypool import KEY_POOL


async def test_renewal_waits_for_the_est_operator_then_finishes(tmp_path: Path) -> None:
    est = ESTSimulator(manual_approval=True, retry_after=1).start()
    try:
        async with Lab(
            tmp_path / "lab",
            csr_keys=KEY_POOL,
            cert_days=10,
            restart_seconds=0.3,
            service_restart_seconds=0.05,
        ) as lab:
            c = lab.expressway_c
            port = free_port()
            config = daemon_config(
                lab,
                tmp_path,
                {c.name: 'ca = "lab-est", key_length = 2048'},
                est_ca_section(est, tmp_path),
                port=port,
            )
            async with LabDaemon(config, port) as daemon:
                # due by policy (10 days left): the first poll starts it
                rows = await daemon.wait_for(
                    "/api/v1/renewals", lambda status, body: status == 200 and body
                )
                renewal_id = rows[0]["id"]
                await daemon.wait_renewal(renewal_id, ("waiting",), "issued")
                # the daemon keeps asking with the same request while the CA says 202
                await until(lambda: est.hits.count("simpleenroll") >= 2, "a poll of the request")
                still = await daemon.renewal(renewal_id)
                assert (still["status"], still["stage"]) == ("waiting", "issued")
                assert est.submissions == 1
                assert BoxCounts.of(c) == BoxCounts(csrs=1, uploads=0, restarts=0)
                assert not [r for r in est.requests.values() if r.cert is not None]

                est.approve_all()
                done = await daemon.wait_renewal(renewal_id, ("done",))

            steps = [(s["stage"], s["result"]) for s in done["steps"]]
            assert [stage for stage, result in steps if result == "advance"] == list(STAGES)
            # every wait was at `issued`, nothing failed or blocked
            assert {stage for stage, result in steps if result != "advance"} == {"issued"}
            assert {result for _, result in steps} == {"advance", "wait"}
            submit = next(s for s in done["steps"] if s["stage"] == "submit")
            assert submit["message"].startswith("pending at the CA"), submit
            assert est.submissions == 1
            assert BoxCounts.of(c) == BoxCounts(csrs=1, uploads=1, restarts=1)
            (request,) = est.requests.values()
            assert request.cert is not None and request.cert == c.served_cert
            assert done["installed_sha256"] == c.served_cert.fingerprint(hashes.SHA256()).hex()
            assert lab.traversal_zone.status() == ("Active", "")
    finally:
        est.stop()
