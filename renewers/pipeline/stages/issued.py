"""Stage issued: ask the CA again, by the persisted handle, until it issues."""

from __future__ import annotations

from datetime import datetime

from renewers.ca.base import Pending
from renewers.pipeline.context import (
    Context,
)
from renewers.pipeline.outcomes import (
    Advance,
    Outcome,
    Wait,
)
from renewers.pipeline.stages.submit import pending_reason, store_issued


async def stage_issued(ctx: Context) -> Outcome:
    """Ask the CA again (by the persisted handle) until it issues."""
    if "issued" in ctx.data:
        return Advance("certificate at hand")
    if "retry_at" in ctx.data:
        retry_at = datetime.fromisoformat(ctx.data["retry_at"])
        if retry_at > ctx.now():
            return Wait(retry_at, ctx.data.get("pending_reason") or "the CA has not issued yet")
    result = await ctx.ca.poll(ctx.data["handle"])
    if isinstance(result, Pending):
        ctx.data["handle"] = result.handle
        ctx.data["retry_at"] = result.retry_at.isoformat()
        ctx.data["pending_reason"] = pending_reason(ctx, result)
        return Wait(result.retry_at, f"pending at the CA: {ctx.data['pending_reason']}")
    ctx.data.pop("retry_at", None)
    return Advance(store_issued(ctx, result))
