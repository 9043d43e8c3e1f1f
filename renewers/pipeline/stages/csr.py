"""Stage csr (step B): one CSR pending on the box with every planned SAN; reused, never
discarded."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from renewers.expressway import (
    CsrRequest,
    csr_sans,
)
from renewers.pipeline.context import (
    Context,
)
from renewers.pipeline.outcomes import (
    Advance,
    Blocked,
    Outcome,
    OutcomeReason,
)
from renewers.validate import (
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
        pending = await box.pending_csr()
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
                "discard it on the box (Maintenance > Security > Server certificate), then run "
                f"'expressway-certd renew {ctx.target.name} --now'",
                OutcomeReason.CSR_PENDING_MISMATCH,
            )
        subject = dict(renewal.subject)
        csr = await box.generate_csr(
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
            )
        )
    ctx.update(csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode())
    return Advance(f"CSR generated on the box for {len(plan.sans)} names")
