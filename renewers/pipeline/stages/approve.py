"""Stage approve: the optional operator gate before anything on the box changes."""

from __future__ import annotations

from datetime import timedelta

from expressway_certd.renewers.pipeline.context import (
    Context,
)
from expressway_certd.renewers.pipeline.outcomes import (
    Advance,
    Outcome,
    Wait,
)


async def stage_approve(ctx: Context) -> Outcome:
    """Optional gate before anything on the box changes."""
    renewal = ctx.target.renewal
    assert renewal is not None
    mode = renewal.approval
    if mode == "auto":
        return Advance("approval mode auto")
    record = ctx.record
    if mode == "manual-if-ca-changed" and not record.ca_changed:
        return Advance("same CA: no approval needed")
    if record.approved_by:
        return Advance(f"approved by {record.approved_by}")
    new_cas = ", ".join(c.sha256 for c in record.trust_cas or ())
    why = (
        f"the CA changed (new CA SHA-256 {new_cas})"
        if record.ca_changed
        else "approval mode manual"
    )
    return Wait(ctx.now() + timedelta(hours=1), why, approval=True)
