"""Stage validate (step C): nothing that fails these checks is ever installed; a new CA
must chain to an anchor pinned for it."""

from __future__ import annotations

import dataclasses

from cryptography import x509

from expressway_certd.monitor.facts import cert_pem, facts_from_x509
from expressway_certd.renewers.pipeline.context import (
    Context,
    sha256_of,
)
from expressway_certd.renewers.pipeline.outcomes import (
    Advance,
    Blocked,
    Outcome,
    OutcomeReason,
)
from expressway_certd.renewers.pipeline.record import TrustedCa
from expressway_certd.renewers.trust import issued_by, pinned_anchors, trust_path
from expressway_certd.renewers.validate import (
    Issuance,
    validate,
)


async def stage_validate(ctx: Context) -> Outcome:
    """Step C: nothing that fails these checks is ever installed."""
    chain = ctx.chain()
    if not any(c.subject == c.issuer for c in chain):
        # Many CAs return the chain without its root; the trust stage needs the root too.
        for ca_cert in await ctx.ca.ca_chain():
            if ca_cert.subject == ca_cert.issuer and ca_cert not in chain:
                chain.append(ca_cert)
        if not any(c.subject == c.issuer for c in chain):
            # ACME never sends its root: take it from the daemon's trust anchors.
            top = chain[-1] if chain else ctx.leaf()
            roots = [a for a in ctx.prober.trust.anchors if a.subject == a.issuer]
            chain += [r for r in roots if issued_by(top, r)][:1]
        ctx.update(
            issued=dataclasses.replace(ctx.issued, chain_pem="".join(cert_pem(c) for c in chain))
        )
    issuance = Issuance(ctx.leaf(), tuple(chain), ctx.csr(), ctx.ca_name)
    # The chain must build to an anchor the operator configured (the daemon's trust bundle or
    # a root pinned for this CA), never to a root the CA's answer brought along: a forged
    # leaf that copies the old AKI must not pass as "same CA" (issue 13).
    anchors = [*pinned_anchors(ctx.config.cas[ctx.ca_name]).roots, *ctx.prober.trust.anchors]
    if not anchors:
        return Blocked(
            f"{ctx.target.name}: validate: no trust anchor is configured, so the issued chain "
            "cannot be verified; set [daemon] trust_bundle (the roots your Expressways trust) "
            f"or [ca.{ctx.ca_name}] trust_anchors, then run "
            f"'expressway-certd renew {ctx.target.name} --now'",
            OutcomeReason.NO_TRUST_ANCHOR,
        )
    problems = validate(ctx.plan, issuance, ctx.now(), anchors)
    if problems:
        untrusted = any(p.check == "chain-invalid" for p in problems)
        return Blocked(
            "; ".join(p.message for p in problems)
            + f"; nothing was installed; fix the CA side, then run 'expressway-certd renew {ctx.target.name} --now'"
            + (
                f"; if the chain is wrong, hand in the right one ('expressway-certd provide "
                f"{ctx.renewal_id} --cert CERT.pem --chain CHAIN.pem'); if the CA is right, add "
                f"its root to [ca.{ctx.ca_name}] trust_anchors (or [daemon] trust_bundle) if you "
                "trust it"
                if untrusted
                else ""
            ),
            OutcomeReason.VALIDATE_REFUSED,
        )
    facts = facts_from_x509(issuance.leaf)
    ca_changed = facts.aki != ctx.snapshot.aki
    ctx.update(ca_changed=ca_changed)
    if ca_changed:
        found = pinned_path(ctx, "validate")
        if isinstance(found, Blocked):
            return found
        cas = tuple(TrustedCa(sha256_of(c), c.subject.rfc4514_string()) for c in found)
        ctx.update(trust_cas=cas)
    return Advance(
        f"SANs, EKU, KU, key, validity and chain OK; not after {facts.not_after:%Y-%m-%d}"
        + (
            "; new CA, chains to a pinned anchor: "
            + ", ".join(f"{c.subject} SHA-256 {c.sha256}" for c in ctx.record.trust_cas or ())
            if ca_changed
            else ""
        )
    )


def pinned_path(ctx: Context, stage: str) -> list[x509.Certificate] | Blocked:
    """The CA certificates the trust stage may push: the leaf's path to a root pinned for this
    CA in the configuration (renewers/trust.py); Blocked when there is none."""
    anchors = pinned_anchors(ctx.config.cas[ctx.ca_name])
    leaf = facts_from_x509(ctx.leaf())
    where = f"{ctx.target.name}: {stage}: the new certificate's CA ({leaf.issuer}, AKI {leaf.aki or '-'})"
    if not anchors.roots:
        return Blocked(
            f"{where} differs from the current one and CA '{ctx.ca_name}' has no pinned trust "
            "anchor, so no CA certificate may go to any trust store; nothing was installed or "
            f"trusted; {anchors.fix}, then run 'expressway-certd renew {ctx.target.name} --now' "
            f"(or 'expressway-certd cancel {ctx.renewal_id}')",
            OutcomeReason.CA_NOT_PINNED,
        )
    path = trust_path(ctx.leaf(), ctx.chain(), anchors)
    if path is None:
        return Blocked(
            f"{where} does not chain to a root pinned for CA '{ctx.ca_name}' "
            f"({'; '.join(anchors.sources)}); nothing was installed or trusted; if the chain is "
            f"wrong, hand in the right one ('expressway-certd provide {ctx.renewal_id} --cert "
            f"CERT.pem --chain CHAIN.pem'); if the CA is right, {anchors.fix} and run "
            f"'expressway-certd renew {ctx.target.name} --now'",
            OutcomeReason.CA_NOT_PINNED,
        )
    return path
