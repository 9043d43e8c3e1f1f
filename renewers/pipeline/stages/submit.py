"""Stage submit: the CSR goes to the CA once; the handle or the issued certificate is persisted."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509

from expressway_certd.monitor.facts import cert_pem
from expressway_certd.renewers.ca.base import Issued, Pending
from expressway_certd.renewers.pipeline.context import (
    Context,
    sha256_of,
)
from expressway_certd.renewers.pipeline.outcomes import (
    Advance,
    Outcome,
)
from expressway_certd.renewers.pipeline.record import IssuedCert


def issued_cert(
    leaf: x509.Certificate, chain: Sequence[x509.Certificate], profile: str | None
) -> IssuedCert:
    """The record's form of a certificate at hand."""
    return IssuedCert(
        leaf_pem=cert_pem(leaf), chain_pem="".join(cert_pem(c) for c in chain), profile=profile
    )


def store_issued(ctx: Context, issued: Issued) -> str:
    ctx.update(issued=issued_cert(issued.leaf, issued.chain, issued.profile), handle=None)
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
    if ctx.record.issued is not None or ctx.record.handle is not None:
        return Advance("already submitted")
    result = await ctx.ca.submit(ctx.csr())
    if isinstance(result, Issued):
        return Advance(store_issued(ctx, result))
    reason = pending_reason(ctx, result)
    ctx.update(handle=result.handle, retry_at=result.retry_at, pending_reason=reason)
    return Advance(f"pending at the CA: {reason}")
