"""Stage install (step E, upload): the leaf only, compared with what is installed first."""

from __future__ import annotations

from renewers.pipeline.context import (
    Context,
    retry,
    sha256_of,
)
from renewers.pipeline.outcomes import (
    Advance,
    Outcome,
    OutcomeReason,
)


async def stage_install(ctx: Context) -> Outcome:
    """Step E (upload): the leaf only, PEM; compared with what is installed first."""
    leaf = ctx.leaf()
    async with ctx.devices.expressway(ctx.target) as box:
        installed = await box.server_certificate()
        if installed == leaf:
            ctx.update(installed_sha256=sha256_of(leaf))
            return Advance("already installed")
        await box.upload_server_certificate(leaf)
        if await box.server_certificate() != leaf:
            return retry(
                ctx,
                "the box accepted the upload but does not show the new certificate",
                OutcomeReason.UPLOAD_NOT_SHOWN,
            )
    ctx.update(installed_sha256=sha256_of(leaf))
    return Advance(f"uploaded {sha256_of(leaf)[:16]} (active after restart)")
