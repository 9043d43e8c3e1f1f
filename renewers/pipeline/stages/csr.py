"""Stage csr (step B): one CSR pending on the box with every planned SAN; reused, never
discarded."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from expressway_certd.renewers.expressway import (
    CsrRequest,
    csr_sans,
)
from expressway_certd.renewers.pipeline.context import (
    Context,
    generate_csr_on,
    pending_csr_of,
)
from expressway_certd.renewers.pipeline.outcomes import (
    Advance,
    Blocked,
    Outcome,
    OutcomeReason,
)
from expressway_certd.renewers.pipeline.record import CLIENT
from expressway_certd.renewers.validate import (
    Plan,
)


def csr_fits(csr: x509.CertificateSigningRequest, plan: Plan) -> bool:
    names = {n.removeprefix("DNS:").lower() for n in csr_sans(csr) if n.startswith("DNS:")}
    return names == set(plan.sans)


async def stage_csr(ctx: Context) -> Outcome:
    """Step B: one CSR pending on the box with every planned SAN; reuse, never discard."""
    plan = ctx.plan
    renewal = ctx.target.renewal
    assert renewal is not None
    async with ctx.devices.expressway(ctx.target) as box:
        pending = await pending_csr_of(box, ctx.kind)
        page = "the X15.5 client certificate page" if ctx.kind == CLIENT else "Server certificate"
        flag = " --kind client" if ctx.kind == CLIENT else ""
        if pending is not None:
            if csr_fits(pending, plan):
                pem = pending.public_bytes(serialization.Encoding.PEM).decode()
                reused = ctx.record.csr_pem == pem
                ctx.update(csr_pem=pem)
                return Advance(
                    "CSR already generated" if reused else "reused the CSR pending on the box"
                )
            return Blocked(
                f"{ctx.target.name}: a CSR is pending on the box for {', '.join(csr_sans(pending))}, "
                f"not the planned {', '.join(plan.sans)}; it is kept (a certificate signed for a "
                "discarded CSR cannot be installed): get it signed and installed by hand, or "
                f"discard it on the box (Maintenance > Security > {page}), then run "
                f"'expressway-certd renew {ctx.target.name} --now{flag}'",
                OutcomeReason.CSR_PENDING_MISMATCH,
            )
        subject = dict(renewal.subject)
        csr = await generate_csr_on(
            box,
            ctx.kind,
            CsrRequest(
                additional_fqdns=plan.sans,
                key_length=renewal.key_length,
                digest=renewal.digest,
                country=subject.get("Country"),
                province=subject.get("Province"),
                locality=subject.get("Locality"),
                organization=subject.get("Organization"),
                organizational_unit=subject.get("OrganizationalUnit"),
                email=subject.get("Email"),
            ),
        )
    ctx.update(csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode())
    return Advance(f"CSR generated on the box for {len(plan.sans)} names")
