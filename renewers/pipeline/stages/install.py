"""Stage install (step E, upload): the leaf only, compared with what is installed first (the
server certificate, or for kind client the X15.5 client certificate)."""

from __future__ import annotations

from expressway_certd.renewers.pipeline.context import (
    Context,
    installed_cert,
    retry,
    sha256_of,
    upload_cert,
)
from expressway_certd.renewers.pipeline.outcomes import (
    Advance,
    Outcome,
    OutcomeReason,
)


async def stage_install(ctx: Context) -> Outcome:
    """Step E (upload): the leaf only, PEM; compared with what is installed first."""
    leaf = ctx.leaf()
    async with ctx.devices.expressway(ctx.target) as box:
        installed = await installed_cert(box, ctx.kind)
        if installed == leaf:
            ctx.update(installed_sha256=sha256_of(leaf))
            return Advance("already installed")
        await upload_cert(box, ctx.kind, leaf)
        if await installed_cert(box, ctx.kind) != leaf:
            return retry(
                ctx,
                "the box accepted the upload but does not show the new certificate",
                OutcomeReason.UPLOAD_NOT_SHOWN,
            )
    ctx.update(installed_sha256=sha256_of(leaf))
    return Advance(f"uploaded {sha256_of(leaf)[:16]} (active after restart)")
