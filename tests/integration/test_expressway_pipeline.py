"""Issue 9 through the renewal pipeline on the lab: what the box cannot tell or refuses blocks
the renewal with the name of the cause, instead of being skipped or retried forever."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.pipeline_env import renewal_env


async def test_box_own_acme_scheduler_blocks_the_preflight(tmp_path: Path) -> None:
    async with renewal_env(tmp_path, target="expe-e1") as env:
        env.lab.expressway_e.acme_enabled = True
        row = await env.pipeline.run((await env.pipeline.start("expe-e1", "t")).id)
        assert (row.status, row.stage) == ("blocked", "preflight"), row.message
        assert "ACME scheduler is on" in row.message
        assert env.lab.expressway_e.csr_generated == 0


async def test_missing_zone_status_blocks_naming_the_resource(tmp_path: Path) -> None:
    async with renewal_env(tmp_path) as env:
        env.lab.expressway_c.remove_resource("/status/common/zone")
        row = await env.pipeline.run((await env.pipeline.start("expe-c1", "t")).id)
        assert (row.status, row.stage) == ("blocked", "snapshot"), row.message
        assert "read zone status" in row.message and "/api/status/common/zone" in row.message
        assert env.lab.expressway_c.csr_generated == 0


async def test_a_ca_upload_that_drops_cas_blocks_and_restores_them(tmp_path: Path) -> None:
    async with renewal_env(tmp_path) as env:
        c = env.lab.expressway_c
        before = list(c.trusted_cas)
        c.trusted_ca_upload_replaces = True
        row = await env.pipeline.run((await env.pipeline.start("expe-c1", "t")).id)
        assert row.status == "blocked", row.message
        assert "uploaded again" in row.message
        assert all(ca in c.trusted_cas for ca in before)
        assert c.uploads == 0  # nothing installed on a box that lost its trust


@pytest.mark.parametrize(
    ("switch", "rule", "eku"),
    [
        (False, "x15.4-e-switch-off", "serverAuth+clientAuth"),
        (True, "x15.4-e-server-only-allowed", "serverAuth "),
    ],
)
async def test_x15_4_e_preflight_reads_the_switch_and_names_the_rule(
    tmp_path: Path, switch: bool, rule: str, eku: str
) -> None:
    async with renewal_env(tmp_path, target="expe-e1") as env:
        env.lab.expressway_e.server_eku_upload = switch
        row = await env.pipeline.run((await env.pipeline.start("expe-e1", "t")).id)
        assert row.status == "done", row.message
        (step,) = [s for s in await env.store.steps(row.id) if s.stage == "preflight"]
        assert f"rule {rule}" in step.message and f"EKU {eku}" in step.message, step.message
