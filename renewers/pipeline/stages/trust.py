"""Stage trust (step D): a new CA is trusted by every TLS peer (Expressways, Unified CM)
before the new certificate goes live."""

from __future__ import annotations

from datetime import timedelta

from expressway_certd.monitor.config import Config, ExpresswayConfig
from expressway_certd.monitor.facts import facts_from_x509
from expressway_certd.renewers.pipeline.context import (
    Context,
    exclusive_for,
)
from expressway_certd.renewers.pipeline.outcomes import (
    Advance,
    Blocked,
    Outcome,
    Wait,
)
from expressway_certd.renewers.pipeline.stages.validate import pinned_path


def trust_boxes(config: Config, target: ExpresswayConfig) -> list[ExpresswayConfig]:
    """The Expressways that must trust a new CA of `target`: itself, its traversal peer, and
    every peer of the traversal peer's cluster (each has its own zone connection)."""
    boxes = [target]
    if target.traversal_peer:
        peer = config.target(target.traversal_peer)
        cluster = (peer.cluster or "").lower()
        boxes += [
            e
            for e in config.expressways
            if e.name != target.name
            and (e.name == peer.name or (cluster and (e.cluster or "").lower() == cluster))
        ]
    return boxes


async def stage_trust(ctx: Context) -> Outcome:
    """Step D: a new CA (AKI differs) is trusted by every TLS peer BEFORE the cert goes live."""
    leaf = facts_from_x509(ctx.leaf())
    old_aki = ctx.snapshot.aki
    ctx.update(ca_changed=leaf.aki != old_aki)
    if not ctx.record.ca_changed:
        return Advance(f"same CA (AKI {(leaf.aki or '-')[:16]}): no trust changes needed")
    # Checked again here: the configuration may have changed since validate.
    found = pinned_path(ctx, "trust")
    if isinstance(found, Blocked):
        return found
    cas = found
    done: list[str] = []
    for box_cfg in trust_boxes(ctx.config, ctx.target):
        async with ctx.devices.expressway(box_cfg) as box:
            added = await box.add_trusted_cas(cas)
        done.append(f"{box_cfg.name} (+{len(added)})")
    role = ctx.snapshot.role
    if role == "c" and ctx.target.unified_cm:
        ucm = ctx.config.unified_cm(ctx.target.unified_cm)
        # The C peers of a cluster share their Unified CM: one renewal at a time changes its
        # trust. Its services restart later, in stage ucm-restart (after approval, in a window).
        async with exclusive_for(ctx, f"cucm:{ucm.name}") as holder:
            if holder is not None:
                return Wait(
                    ctx.now() + timedelta(seconds=15),
                    f"another renewal ({holder}) is updating Unified CM {ucm.name}",
                )
            async with ctx.devices.unified_cm(ucm) as cm:
                for node in ucm.nodes:
                    await cm.add_trust(
                        node, cas, stores=ucm.trust_stores, description="expressway-certd: new CA"
                    )
                    done.append(f"{ucm.name}/{node} ({', '.join(ucm.trust_stores)})")
    return Advance("new CA trusted by " + ", ".join(done))
