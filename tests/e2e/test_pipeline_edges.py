"""Pipeline edge cases on the lab: a CSR already pending on the box, and transient box errors."""

from __future__ import annotations

from datetime import timedelta

from expressway_certd.renewers.expressway import CsrRequest
from expressway_certd.renewers.pipeline import ConfiguredDevices
from tests.e2e.pipeline_env import renewal_env


async def pending_csr(env, names):
    async with ConfiguredDevices().expressway(env.config.target("expe-c1")) as box:
        return await box.generate_csr(CsrRequest(additional_fqdns=tuple(names)))


async def test_pending_csr_that_fits_is_reused(tmp_path):
    async with renewal_env(tmp_path) as env:
        c = env.lab.expressway_c
        await pending_csr(env, ["expe-c1.lab.example", "expressway-c.lab.example"])
        assert c.csr_generated == 1
        row = await env.pipeline.run((await env.pipeline.start("expe-c1", "t")).id)
        assert row.status == "done", row.message
        assert c.csr_generated == 1  # the pending one was used, no second CSR
        steps = await env.store.steps(row.id)
        assert any(s.stage == "csr" and "reused" in s.message for s in steps)


async def test_pending_csr_that_does_not_fit_blocks_and_is_kept(tmp_path):
    async with renewal_env(tmp_path) as env:
        c = env.lab.expressway_c
        await pending_csr(env, ["something-else.lab.example"])
        kept = c.pending
        row = await env.pipeline.run((await env.pipeline.start("expe-c1", "t")).id)
        assert (row.status, row.stage) == ("blocked", "csr")
        assert "it is kept" in row.message and "renew expe-c1 --now" in row.message
        assert c.pending is kept and c.csr_generated == 1  # never discarded, never replaced
        assert env.est.submissions == 0
        assert [e.type for e in env.events][-1] == "RenewalBlocked"


async def test_transient_box_errors_are_retried(tmp_path):
    async with renewal_env(tmp_path) as env:
        c = env.lab.expressway_c
        c.inject_fault("error", path="/api/provisioning/certs/server", count=-1, status=503)
        row = await env.pipeline.run((await env.pipeline.start("expe-c1", "t")).id)
        assert (row.status, row.stage) == ("failed", "snapshot")
        assert row.next_at is not None and row.next_at > row.updated_at
        failed = [e for e in env.events if e.type == "StageFailed"]
        assert failed and failed[0].retry_at and "503" in failed[0].why
        # not before its time
        assert (await env.pipeline.run(row.id)).status == "failed"
        c.clear_faults()
        await env.pipeline.retry_now(row.id)
        row = await env.pipeline.run(row.id)
        assert row.status == "done", row.message


async def test_restart_waits_while_another_process_restarts_a_peer(tmp_path):
    async with renewal_env(tmp_path) as env:
        c = env.lab.expressway_c
        group = env.config.target("expe-c1").cluster or "expe-c1"
        held = await env.store.claim_lease(
            f"restart:{group}", "other-host:1:x", env.pipeline.clock(), timedelta(minutes=5)
        )
        assert held
        row = await env.pipeline.run((await env.pipeline.start("expe-c1", "t")).id)
        assert (row.status, row.stage) == ("waiting", "restart")
        assert "other-host:1:x" in row.message and c.restart_count == 0
        await env.store.release_lease(f"restart:{group}", "other-host:1:x")
        await env.pipeline.retry_now(row.id)
        row = await env.pipeline.run(row.id)
        assert row.status == "done" and c.restart_count == 1
