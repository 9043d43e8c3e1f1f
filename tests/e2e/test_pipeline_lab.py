"""The renewal pipeline end to end on the lab: a C/E pair with a traversal zone and a Unified CM,
the C's certificate renewed by a CA with a different root (the AKI changes)."""

from __future__ import annotations

import asyncio

from cryptography.hazmat.primitives import hashes

from expressway_certd.renewers import pipeline as pipeline_module
from expressway_certd.renewers.pipeline import STAGES, Advance
from tests.e2e.pipeline_env import renewal_env


async def test_ca_change_keeps_the_traversal_zone_active(tmp_path):
    async with renewal_env(tmp_path) as env:
        c, e, cucm = env.lab.expressway_c, env.lab.expressway_e, env.lab.cucm
        old = c.served_cert
        assert env.lab.traversal_zone.status()[0] == "Active"
        row = await env.pipeline.start("expe-c1", "test")
        row = await env.pipeline.run(row.id)
        assert row.status == "done", row.message
        steps = await env.store.steps(row.id)
        assert [s.stage for s in steps] == list(STAGES)
        assert all(s.result == "advance" for s in steps)

        new = c.served_cert
        assert new != old
        assert new.issuer == env.est.issuing.cert.subject
        # trust went to E and to Unified CM (tomcat + callmanager) BEFORE install
        assert env.est.root.cert in e.trusted_cas
        assert (
            env.est.root.cert in cucm.trust["tomcat"]
            and env.est.root.cert in cucm.trust["callmanager"]
        )
        assert env.lab.traversal_zone.status() == ("Active", "")
        assert env.lab.secure_zone.status() == ("Active", "")
        assert env.est.submissions == 1
        types = [ev.type for ev in env.events]
        assert types.count("StageSucceeded") == len(STAGES)
        assert types[-1] == "RenewalCompleted"
        assert env.events[-1].new_sha256 == new.fingerprint(hashes.SHA256()).hex()
        trust_step = next(s for s in steps if s.stage == "trust")
        assert "expe-e1" in trust_step.message and "cucm" in trust_step.message.lower()


async def test_control_without_trust_the_zone_fails(tmp_path, monkeypatch):
    async def skip_trust(ctx):
        return Advance("skipped (control run)")

    monkeypatch.setitem(pipeline_module.STAGE_FUNCTIONS, "trust", skip_trust)
    async with renewal_env(tmp_path, renewal='ca = "lab-est", verify_timeout = "2s"') as env:
        row = await env.pipeline.start("expe-c1", "control")
        row = await env.pipeline.run(row.id)
        # verify waits for the zone to come back, then blocks with the zone's own reason
        while row.status == "waiting":
            await asyncio.sleep(0.5)
            row = await env.pipeline.run(row.id)
        assert row.status == "blocked" and row.stage == "verify"
        state, reason = env.lab.traversal_zone.status()
        assert state == "Failed" and reason
        assert "UCTraversal" in row.message or "zone" in row.message
