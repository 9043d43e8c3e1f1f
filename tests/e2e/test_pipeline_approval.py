"""Approval gate and idempotent stages on the lab (in process)."""

from __future__ import annotations

from expressway_certd.monitor.events import EventBus
from expressway_certd.renewers.pipeline import STAGES, Pipeline
from tests.e2e.pipeline_env import renewal_env


async def test_manual_approval_waits_then_installs(tmp_path):
    async with renewal_env(tmp_path, renewal='ca = "lab-est", approval = "manual"') as env:
        c = env.lab.expressway_c
        old = c.served_cert
        row = await env.pipeline.start("expe-c1", "test")
        row = await env.pipeline.run(row.id)
        assert (row.status, row.stage) == ("waiting", "approve")
        assert c.served_cert == old and c.installed.cert == old  # nothing changed on the box
        approvals = [e for e in env.events if e.type == "ApprovalRequired"]
        assert len(approvals) == 1 and approvals[0].renewal_id == row.id
        # running again before approval changes nothing and announces nothing new
        seen = len(env.events)
        row = await env.pipeline.run(row.id)
        assert row.stage == "approve" and len(env.events) == seen
        await env.pipeline.approve(row.id, "alice")
        row = await env.pipeline.run(row.id)
        assert row.status == "done", row.message
        assert c.served_cert != old
        steps = await env.store.steps(row.id)
        assert [s.stage for s in steps if s.result == "advance"] == list(STAGES)
        assert any(s.stage == "approve" and "alice" in s.message for s in steps)


async def test_manual_if_ca_changed_passes_through_when_ca_is_the_same(tmp_path):
    async with renewal_env(
        tmp_path, renewal='ca = "lab-est", approval = "manual-if-ca-changed"'
    ) as env:
        row = await env.pipeline.start("expe-c1", "test")
        row = await env.pipeline.run(row.id)
        # the EST CA differs from the lab CA: the gate holds
        assert (row.status, row.stage) == ("waiting", "approve")
        assert row.data["ca_changed"] is True


async def test_second_start_returns_the_active_renewal(tmp_path):
    async with renewal_env(tmp_path, renewal='ca = "lab-est", approval = "manual"') as env:
        first = await env.pipeline.start("expe-c1", "one")
        second = await env.pipeline.start("expe-c1", "two")
        assert second.id == first.id
        assert len(await env.store.renewals_for("expe-c1")) == 1


async def test_a_renewal_finished_by_another_process_is_seen(tmp_path):
    async with renewal_env(tmp_path, renewal='ca = "lab-est", approval = "manual"') as env:
        first = env.pipeline
        row = await first.run((await first.start("expe-c1", "t")).id)
        assert first.latest["expe-c1"].status == "waiting"
        # another process (the CLI) approves and finishes it
        other = Pipeline(env.config, env.store, EventBus(), first.prober, first.connectors)
        await other.approve(row.id, "carol")
        assert (await other.run(row.id)).status == "done"
        await first.run_due()
        assert first.latest["expe-c1"].status == "done"
