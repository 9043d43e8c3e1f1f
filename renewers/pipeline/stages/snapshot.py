"""Stage snapshot (step A): the current certificate's facts, the version, role and zones."""

from __future__ import annotations

import dataclasses

import structlog

from monitor.errors import DeviceError
from monitor.facts import cert_pem, facts_from_x509
from renewers.pipeline.context import (
    Context,
)
from renewers.pipeline.outcomes import (
    Advance,
    Outcome,
)

log = structlog.get_logger("renewers.pipeline")


async def stage_snapshot(ctx: Context) -> Outcome:
    """Step A: record the current certificate's facts, the version, role and zones."""
    async with ctx.devices.expressway(ctx.target) as box:
        info = await box.system_info()
        current = await box.server_certificate()
        # A box whose RAML lacks zone status raises OperationUnsupported: the renewal blocks
        # naming it rather than checking nothing (issue 9).
        zones = [dataclasses.asdict(z) for z in await box.zones()]
        role = ctx.target.role or info.role
        acme_scheduler = await box.acme_scheduler(role=role)
        server_eku_upload = await box.server_eku_upload_if_relevant(role)
    peer_version = await _traversal_peer_version(ctx) if server_eku_upload else None
    facts = facts_from_x509(current)
    ctx.data["snapshot"] = {
        "version": info.version or ctx.target.version,
        "role": role,
        "cert_pem": cert_pem(current),
        "sha256": facts.sha256,
        "aki": facts.aki,
        "issuer": facts.issuer,
        "not_after": facts.not_after.isoformat(),
        "sans": [str(s) for s in facts.sans],
        "zones": zones,
        "acme_scheduler": acme_scheduler,
        "server_eku_upload": server_eku_upload,
        "peer_version": peer_version,
    }
    return Advance(
        f"{info.version} Expressway-{(role or '?').upper()}, serving {facts.sha256[:16]} "
        f"(AKI {(facts.aki or '-')[:16]}, {len(facts.dns_names)} DNS SANs)"
    )


async def _traversal_peer_version(ctx: Context) -> str | None:
    """The traversal peer's version (FN74362: serverAuth-only needs C and E on the same one);
    None when there is no peer configured or it cannot be read."""
    if not ctx.target.traversal_peer:
        return None
    try:
        async with ctx.devices.expressway(ctx.config.target(ctx.target.traversal_peer)) as peer:
            return (await peer.system_info()).version
    except DeviceError as exc:
        log.warning("pipeline.peer_version_unread", target=ctx.target.name, error=str(exc))
        return None
