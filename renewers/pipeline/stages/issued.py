"""Stage issued: ask the CA again, by the persisted handle, until it issues."""

from __future__ import annotations

from expressway_certd.renewers.ca.base import Pending
from expressway_certd.renewers.pipeline.context import (
    Context,
)
from expressway_certd.renewers.pipeline.outcomes import (
    Advance,
    Outcome,
    Wait,
)
from expressway_certd.renewers.pipeline.record import RecordError
from expressway_certd.renewers.pipeline.stages.submit import pending_reason, store_issued


async def stage_issued(ctx: Context) -> Outcome:
    """Ask the CA again (by the persisted handle) until it issues."""
    record = ctx.record
    if record.issued is not None:
        return Advance("certificate at hand")
    if record.retry_at is not None and record.retry_at > ctx.now():
        return Wait(record.retry_at, record.pending_reason or "the CA has not issued yet")
    if record.handle is None:
        raise RecordError(
            f"{ctx.target.name}: renewal {ctx.renewal_id}: no certificate and no CA handle; "
            f"hand one in ('expressway-certd provide {ctx.renewal_id} --cert CERT.pem') or "
            f"cancel it ('expressway-certd cancel {ctx.renewal_id}') and start a new one"
        )
    result = await ctx.ca.poll(dict(record.handle))
    if isinstance(result, Pending):
        reason = pending_reason(ctx, result)
        ctx.update(handle=result.handle, retry_at=result.retry_at, pending_reason=reason)
        return Wait(result.retry_at, f"pending at the CA: {reason}")
    ctx.update(retry_at=None)
    return Advance(store_issued(ctx, result))
