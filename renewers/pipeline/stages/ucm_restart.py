"""Stage ucm-restart: the Unified CM services that read the changed trust stores restart,
node by node, inside the maintenance window; progress persisted per service."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from expressway_certd.monitor.config import MaintenanceWindow, UnifiedCMConfig
from expressway_certd.renewers.cucm import RESTARTED, TOMCAT
from expressway_certd.renewers.maintenance import next_window_start
from expressway_certd.renewers.pipeline.context import (
    Context,
    exclusive_for,
)
from expressway_certd.renewers.pipeline.outcomes import (
    Advance,
    Outcome,
    Wait,
)
from expressway_certd.renewers.pipeline.record import RenewalRecord


def _cucm_window(ctx: Context, ucm: UnifiedCMConfig) -> MaintenanceWindow | None:
    """The Unified CM's own maintenance window, else the renewal target's."""
    renewal = ctx.target.renewal
    assert renewal is not None
    return ucm.maintenance_window or renewal.maintenance_window


def _restart_order(services: Sequence[str]) -> list[str]:
    """Control Center services first, Cisco Tomcat last (its restart drops the API)."""
    return [s for s in services if s != TOMCAT] + [s for s in services if s == TOMCAT]


async def stage_ucm_restart(ctx: Context) -> Outcome:
    """Restart the Unified CM services that read the trust stores the trust stage changed
    (Cisco CallManager, Tftp, Tomcat): after the approval gate, inside the Unified CM's
    maintenance window (else the target's), node by node in `nodes` order (publisher first).
    Every finished service is persisted at once, so a retry or a new process never restarts
    what already restarted; a service not activated on a node is skipped."""
    role = ctx.snapshot.role
    if not ctx.record.ca_changed or role != "c" or not ctx.target.unified_cm:
        return Advance("no Unified CM trust change: nothing to restart")
    ucm = ctx.config.unified_cm(ctx.target.unified_cm)
    services = _restart_order(ucm.restart_services)
    ctx.update(cucm_restarts=ctx.record.cucm_restarts or ())
    window = _cucm_window(ctx, ucm)

    def pending(node: str) -> list[str]:
        return [s for s in services if s not in ctx.record.restarted(node)]

    if all(not pending(node) for node in ucm.nodes):
        return Advance(_ucm_summary(ucm, ctx.record))
    # Two Tomcat restarts at once fail each other: one renewal at a time per Unified CM.
    async with exclusive_for(ctx, f"cucm:{ucm.name}") as holder:
        if holder is not None:
            return Wait(
                ctx.now() + timedelta(seconds=15),
                f"another renewal ({holder}) is restarting services of Unified CM {ucm.name}",
            )
        async with ctx.devices.unified_cm(ucm) as cm:
            for node in ucm.nodes:
                for service in pending(node):
                    if window is not None:
                        now = ctx.now()
                        start = next_window_start(window, now)
                        if start > now:
                            return Wait(
                                start,
                                f"Unified CM {ucm.name}: restarting {service} on {node} waits "
                                f"for the maintenance window ({window.cron} {window.timezone})",
                            )
                    result = await cm.restart_service(node, service)
                    ctx.record = ctx.record.with_restart(node, service, result)
                    await ctx.checkpoint()
                    ctx.fault_seam(ctx.target.name, f"ucm-restart:{node}:{service}")
    return Advance(_ucm_summary(ucm, ctx.record))


def _ucm_summary(ucm: UnifiedCMConfig, record: RenewalRecord) -> str:
    parts = []
    for node in ucm.nodes:
        done = record.restarted(node)
        restarted = [s for s, r in done.items() if r == RESTARTED]
        skipped = [s for s, r in done.items() if r != RESTARTED]
        text = f"{node} restarted {', '.join(restarted) or 'nothing'}"
        if skipped:
            text += f" (not activated: {', '.join(skipped)})"
        parts.append(text)
    return f"Unified CM {ucm.name}: " + "; ".join(parts)
