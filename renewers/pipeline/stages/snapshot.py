"""Stage snapshot (step A): the current certificate's facts, the version, role and zones.
For a renewal of kind client the current certificate is the X15.5 client certificate (its
resource found in /api/raml); the box's own ACME scheduler and the X15.4 switch concern the
server certificate only and are not read."""

from __future__ import annotations

import structlog

from expressway_certd.monitor.errors import DeviceError
from expressway_certd.monitor.facts import cert_pem, facts_from_x509
from expressway_certd.renewers.pipeline.context import (
    Context,
    installed_cert,
)
from expressway_certd.renewers.pipeline.outcomes import (
    Advance,
    Outcome,
)
from expressway_certd.renewers.pipeline.record import SERVER, Snapshot

log = structlog.get_logger("renewers.pipeline")


async def stage_snapshot(ctx: Context) -> Outcome:
    """Step A: record the current certificate's facts, the version, role and zones."""
    async with ctx.devices.expressway(ctx.target) as box:
        info = await box.system_info()
        current = await installed_cert(box, ctx.kind)
        # A box whose RAML lacks zone status raises OperationUnsupported: the renewal blocks
        # naming it rather than checking nothing (issue 9).
        zones = tuple(await box.zones())
        role = ctx.target.role or info.role
        acme_scheduler: bool | None = False
        server_eku_upload = None
        if ctx.kind == SERVER:
            acme_scheduler = await box.acme_scheduler(role=role)
            server_eku_upload = await box.server_eku_upload_if_relevant(role)
    peer_version = await _traversal_peer_version(ctx) if server_eku_upload else None
    facts = facts_from_x509(current)
    ctx.update(
        snapshot=Snapshot(
            version=info.version or ctx.target.version,
            role=role,
            cert_pem=cert_pem(current),
            sha256=facts.sha256,
            aki=facts.aki,
            issuer=facts.issuer,
            not_after=facts.not_after.isoformat(),
            sans=tuple(str(s) for s in facts.sans),
            zones=zones,
            acme_scheduler=acme_scheduler,
            server_eku_upload=server_eku_upload,
            peer_version=peer_version,
        )
    )
    return Advance(
        f"{info.version} Expressway-{(role or '?').upper()}, "
        + ("serving" if ctx.kind == SERVER else "client certificate")
        + f" {facts.sha256[:16]} "
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
