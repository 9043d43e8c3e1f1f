"""Stage preflight: the SANs and the EKU the new certificate needs; a CA that cannot deliver
them is refused before anything changes. A renewal of kind client needs clientAuth (rule
`x15.5-client-certificate`), a CA that is not ACME, and the box's client store resources in
/api/raml (read, CSR, upload); a box that lists none blocks here with the manual fix."""

from __future__ import annotations

from collections.abc import Iterable

from cryptography import x509

from expressway_certd.monitor.facts import eku_config_name, facts_from_x509
from expressway_certd.renewers.expressway import ZoneState
from expressway_certd.renewers.pipeline.context import (
    Context,
)
from expressway_certd.renewers.pipeline.outcomes import (
    Advance,
    Blocked,
    Outcome,
    OutcomeReason,
)
from expressway_certd.renewers.pipeline.record import CLIENT
from expressway_certd.renewers.validate import (
    make_plan,
    preflight,
)


def zone_kinds(role: str | None, zones: Iterable[ZoneState]) -> list[str]:
    """The zone kinds the EKU rule and the plan use ("traversal-client", "unified-cm")."""
    kinds = []
    for z in zones:
        kind = z.kind.lower()
        if "traversal" in kind and role == "c":
            kinds.append("traversal-client")
        if "unified" in kind or "neighbo" in kind:
            kinds.append("unified-cm")
    return sorted(set(kinds))


async def stage_preflight(ctx: Context) -> Outcome:
    """Decide the SANs and the EKU the new certificate needs; refuse a CA that cannot deliver."""
    snap = ctx.snapshot
    current = x509.load_pem_x509_certificate(snap.cert_pem.encode())
    renewal = ctx.target.renewal
    assert renewal is not None
    plan = make_plan(
        ctx.target.name,
        facts_from_x509(current),
        role=snap.role,
        version=snap.version,
        cluster_fqdn=ctx.target.cluster,
        extra_sans=renewal.extra_sans,
        zones=zone_kinds(snap.role, snap.zones),
        server_eku_upload=snap.server_eku_upload,
        peer_version=snap.peer_version,
        max_lifetime_days=renewal.max_lifetime.days,
        require_eku=renewal.require_eku,
        cert_kind=ctx.kind,
    )
    ctx.update(plan=plan)
    problems = preflight(
        plan,
        ctx.ca_name,
        ctx.ca.capabilities().ekus,
        acme_scheduler=snap.acme_scheduler,
        ca_kind=ctx.config.cas[ctx.ca_name].kind,
    )
    if not problems and ctx.kind == CLIENT:
        # Raises OperationUnsupported (the renewal blocks) naming what /api/raml lacks.
        async with ctx.devices.expressway(ctx.target) as box:
            await box.check_client_renewal()
    if problems:
        return Blocked("; ".join(p.message for p in problems), OutcomeReason.PREFLIGHT_REFUSED)
    ekus = "+".join(eku_config_name(e) for e in plan.required_eku)
    what = "client certificate: " if ctx.kind == CLIENT else ""
    return Advance(f"{what}SANs {', '.join(plan.sans)}; EKU {ekus} (rule {plan.eku_rule})")
