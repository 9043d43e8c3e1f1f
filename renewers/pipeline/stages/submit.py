"""Stage submit: the CSR goes to the CA once; the handle or the issued certificate is persisted."""

from __future__ import annotations

from monitor.facts import cert_pem
from renewers.ca.base import Issued, Pending
from renewers.pipeline.context import (
    Context,
    sha256_of,
)
from renewers.pipeline.outcomes import (
    Advance,
    Outcome,
)


def store_issued(ctx: Context, issued: Issued) -> str:
    ctx.data["issued"] = {
        "leaf_pem": cert_pem(issued.leaf),
        "chain_pem": "".join(cert_pem(c) for c in issued.chain),
        "profile": issued.profile,
    }
    ctx.data.pop("handle", None)
    return f"issued {sha256_of(issued.leaf)[:16]}"


def pending_reason(ctx: Context, pending: Pending) -> str:
    if not pending.awaits_provide:
        return pending.reason
    return (
        f"{pending.reason}, then run 'expressway-certd provide {ctx.renewal_id} "
        "--cert CERT.pem [--chain CHAIN.pem]'"
    )


async def stage_submit(ctx: Context) -> Outcome:
    """Send the CSR to the CA once; a handle or the issued certificate is persisted."""
    if "issued" in ctx.data or "handle" in ctx.data:
        return Advance("already submitted")
    result = await ctx.ca.submit(ctx.csr())
    if isinstance(result, Issued):
        return Advance(store_issued(ctx, result))
    ctx.data["handle"] = result.handle
    ctx.data["retry_at"] = result.retry_at.isoformat()
    ctx.data["pending_reason"] = pending_reason(ctx, result)
    return Advance(f"pending at the CA: {ctx.data['pending_reason']}")
