"""Stage restart (step E, restart): inside the maintenance window, one cluster peer at a
time, until every endpoint serves the new certificate. For kind client nothing served shows
the client certificate: the restart is recorded (`client_restarted`) once the box is back, and
stage verify reads the client certificate and the zones."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from expressway_certd.renewers.maintenance import next_window_start
from expressway_certd.renewers.pipeline.context import (
    Context,
    exclusive_for,
    retry,
)
from expressway_certd.renewers.pipeline.outcomes import (
    Advance,
    Outcome,
    OutcomeReason,
    Wait,
)
from expressway_certd.renewers.pipeline.record import CLIENT


async def served_everywhere(ctx: Context, sha256: str) -> tuple[bool, list[str]]:
    observations = await asyncio.gather(
        *(ctx.prober.probe(ctx.target.name, ep) for ep in ctx.target.endpoints)
    )
    stale = [
        f"{o.endpoint.address} ({o.error_class or (o.facts.sha256[:12] if o.facts else '?')})"
        for o in observations
        if not (o.ok and o.facts is not None and o.facts.sha256 == sha256)
    ]
    return not stale, stale


async def stage_restart(ctx: Context) -> Outcome:
    """Step E (restart) inside the maintenance window; cluster peers one at a time."""
    sha = ctx.installed_sha256
    client = ctx.kind == CLIENT
    if client and ctx.record.client_restarted:
        return Advance("already restarted since the client certificate was uploaded")
    if not client:
        serving, _ = await served_everywhere(ctx, sha)
        if serving:
            return Advance("already serving the new certificate")
    renewal = ctx.target.renewal
    assert renewal is not None
    now = ctx.now()
    if renewal.maintenance_window is not None:
        start = next_window_start(renewal.maintenance_window, now)
        if start > now:
            return Wait(
                start,
                f"outside the maintenance window ({renewal.maintenance_window.cron} {renewal.maintenance_window.timezone})",
            )
    group = ctx.target.cluster or ctx.target.name
    # One peer of a cluster restarts at a time, each back and serving before the next.
    async with exclusive_for(ctx, f"restart:{group}") as holder:
        if holder is not None:
            return Wait(
                ctx.now() + timedelta(seconds=15),
                f"another process ({holder}) is restarting a peer of {group}",
            )

        async def new_cert_served() -> bool:
            # only a restart activates an uploaded certificate (the box was not serving it
            # above): proof of the restart even when its down phase fell between two polls
            return not client and (await served_everywhere(ctx, sha))[0]

        async with ctx.devices.expressway(ctx.target) as box:
            how = await box.restart(wait=True, restarted=new_cert_served)
        if client:
            ctx.update(client_restarted=True)
            return Advance(f"restarted via {how}; the box presents the new client certificate")
        deadline = time.monotonic() + renewal.verify_timeout.total_seconds()
        while True:
            serving, stale = await served_everywhere(ctx, sha)
            if serving:
                break
            if time.monotonic() > deadline:
                return retry(
                    ctx,
                    f"restarted (via {how}) but not serving the new certificate on "
                    f"{', '.join(stale)}",
                    OutcomeReason.RESTART_NOT_SERVING,
                )
            await asyncio.sleep(0.5)
    return Advance(f"restarted via {how}; serving the new certificate on every endpoint")
