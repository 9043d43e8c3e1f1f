"""Stage verify: every endpoint serves the new fingerprint and the zones are Active. For kind
client: the box shows the new client certificate and the zones (where the box is the TLS
client and presents it) are Active."""

from __future__ import annotations

from datetime import timedelta

from expressway_certd.renewers.pipeline.context import (
    Context,
    installed_cert,
    sha256_of,
)
from expressway_certd.renewers.pipeline.outcomes import (
    Advance,
    Blocked,
    Outcome,
    OutcomeReason,
    Wait,
)
from expressway_certd.renewers.pipeline.record import CLIENT
from expressway_certd.renewers.pipeline.stages.restart import served_everywhere
from expressway_certd.renewers.validate import (
    ZoneReading,
    check_zones,
)


async def stage_verify(ctx: Context) -> Outcome:
    """Every endpoint serves the new fingerprint and the traversal / Unified CM zones are Active."""
    sha = ctx.installed_sha256
    client = ctx.kind == CLIENT
    problems: list[str] = []
    if not client:
        serving, stale = await served_everywhere(ctx, sha)
        problems += [] if serving else [f"not serving the new certificate on {', '.join(stale)}"]
    async with ctx.devices.expressway(ctx.target) as box:
        if client:
            shown = sha256_of(await installed_cert(box, ctx.kind))
            if shown != sha:
                problems.append(f"the box shows client certificate {shown[:16]}, not {sha[:16]}")
        zones = await box.zones()
    seen_before = [z.name for z in ctx.snapshot.zones]
    readings = [ZoneReading(z.name, z.state, z.reason) for z in zones]
    problems += [p.message for p in check_zones(ctx.target.name, readings, seen_before)]
    if not problems:
        where = "client certificate" if client else f"{len(ctx.target.endpoints)} endpoints serve"
        return Advance(f"{where} {sha[:16]}; {len(zones)} zones Active")
    renewal = ctx.target.renewal
    assert renewal is not None
    deadline = ctx.record.verify_deadline
    if deadline is None:
        deadline = ctx.now() + renewal.verify_timeout
        ctx.update(verify_deadline=deadline)
    if ctx.now() < deadline:
        return Wait(ctx.now() + timedelta(seconds=5), "; ".join(problems))
    return Blocked(
        f"{ctx.target.name}: after installing, "
        + "; ".join(problems)
        + ": check the traversal peer's trusted CA list and the box's alarms",
        OutcomeReason.VERIFY_TIMEOUT,
    )
