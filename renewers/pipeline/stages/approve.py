"""Stage approve: the optional operator gate before anything on the box changes."""

from __future__ import annotations

from datetime import timedelta

from renewers.pipeline.context import (
    Context,
)
from renewers.pipeline.outcomes import (
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
    if mode == "manual-if-ca-changed" and not ctx.data.get("ca_changed"):
        return Advance("same CA: no approval needed")
    if ctx.data.get("approved_by"):
        return Advance(f"approved by {ctx.data['approved_by']}")
    new_cas = ", ".join(c["sha256"] for c in ctx.data.get("trust_cas", []))
    why = (
        f"the CA changed (new CA SHA-256 {new_cas})"
        if ctx.data.get("ca_changed")
        else "approval mode manual"
    )
    return Wait(ctx.now() + timedelta(hours=1), why, approval=True)
