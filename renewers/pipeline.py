"""The renewal pipeline: Cisco's procedure (steps A to E) as a persisted state machine.

Each stage is a small async function `(Context) -> Advance | Wait | Blocked | Failed`. The
runner persists the outcome (and the stage context) BEFORE anything else happens, so a kill -9
at any point resumes from the last persisted stage; every stage first reads the box's state,
so running it twice does no harm (a pending CSR is reused, never discarded; trust is listed
before it is added; the installed certificate is compared before an upload; the served
certificate is checked before a restart).

    snapshot -> preflight -> csr -> submit -> issued -> validate -> trust -> approve
             -> install -> restart -> verify -> done
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from monitor.config import Config, ExpresswayConfig, MaintenanceWindow, UnifiedCMConfig
from monitor.errors import CAError, CertdError, DeviceError
from monitor.events import (
    ApprovalRequired,
    Event,
    EventBus,
    RenewalBlocked,
    RenewalCancelled,
    RenewalCompleted,
    StageFailed,
    StageStarted,
    StageSucceeded,
    StageWaiting,
)
from monitor.facts import cert_pem, facts_from_x509
from monitor.probe import Prober
from monitor.store import RenewalRow, StepRow, Store
from renewers.ca.base import CAConnector, CARequestError, Issued, Pending
from renewers.cucm import RESTARTED, TOMCAT, CucmClient, CucmClientConfig
from renewers.expressway import (
    CertificateEkuRefused,
    CsrRequest,
    ExpresswayClient,
    ExpresswayClientConfig,
    OperationUnsupported,
    TrustedCasLost,
    csr_sans,
)
from renewers.maintenance import next_window_start
from renewers.trust import pinned_anchors, trust_path
from renewers.validate import (
    Issuance,
    Plan,
    ZoneReading,
    check_zones,
    make_plan,
    preflight,
    validate,
)

log = structlog.get_logger("renewers.pipeline")

STAGES = (
    "snapshot",
    "preflight",
    "csr",
    "submit",
    "issued",
    "validate",
    "trust",
    "approve",
    "ucm-restart",
    "install",
    "restart",
    "verify",
)
# Leases are renewed every LEASE / 3 while their holder works, so a holder that died without
# releasing one (on another host) blocks the others for at most LEASE.
LEASE = timedelta(minutes=3)
# How long an operator command waits for this process's own run of the renewal to let go.
BUSY_WAIT = timedelta(seconds=5)


@contextlib.asynccontextmanager
async def keep_alive(renew: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
    """Call `renew` every LEASE / 3 while the body runs."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(LEASE.total_seconds() / 3)
            try:
                await renew()
            except Exception:  # a missed heartbeat is retried at the next one
                log.warning("lease heartbeat failed", exc_info=True)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


RETRY_BACKOFF = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
)
# Test hook (tests/e2e/test_renewal_crash.py), inert unless this variable is set: the process
# SIGKILLs itself right after persisting "start" (a new renewal) or a stage's outcome ("csr"),
# or when a stage has run but its outcome is not persisted yet ("csr-unsaved"); for any target
# ("csr") or one ("expe-c2:csr").
KILL_AFTER_ENV = "EXPRESSWAY_CERTD_TEST_KILL_AFTER"


def _test_kill_after(target: str, point: str) -> None:
    wanted = os.environ.get(KILL_AFTER_ENV)
    if wanted and wanted in (point, f"{target}:{point}"):
        os.kill(os.getpid(), signal.SIGKILL)


# ---- outcomes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Advance:
    detail: str = ""


@dataclass(frozen=True)
class Wait:
    until: datetime
    why: str
    approval: bool = False  # waiting for an operator's `approve`


@dataclass(frozen=True)
class Blocked:
    why: str  # what the operator must do


@dataclass(frozen=True)
class Failed:
    why: str
    retry_at: datetime


Outcome = Advance | Wait | Blocked | Failed


def transition(
    row: RenewalRow, outcome: Outcome, now: datetime, data: dict[str, Any]
) -> tuple[RenewalRow, str, str]:
    """The renewal after a stage's outcome, with the step's result and message. Pure: the
    table of docs/renewal.md ("Outcomes"), tested as a table in tests/unit/test_transition.py."""
    stage = row.stage
    if isinstance(outcome, Advance):
        index = STAGES.index(stage)
        done = index == len(STAGES) - 1
        new = dataclasses.replace(
            row, status="done" if done else "running",
            stage=stage if done else STAGES[index + 1], attempts=0, next_at=None,
            message=outcome.detail, data=data, updated_at=now,
        )  # fmt: skip
        return new, "advance", outcome.detail
    if isinstance(outcome, Wait):
        new = dataclasses.replace(
            row, status="waiting", next_at=outcome.until, message=outcome.why, data=data,
            updated_at=now, attempts=row.attempts + 1,
        )  # fmt: skip
        return new, "wait", outcome.why
    if isinstance(outcome, Blocked):
        new = dataclasses.replace(
            row, status="blocked", next_at=None, message=outcome.why, data=data,
            updated_at=now, attempts=row.attempts + 1,
        )  # fmt: skip
        return new, "blocked", outcome.why
    new = dataclasses.replace(
        row, status="failed", next_at=outcome.retry_at, message=outcome.why, data=data,
        updated_at=now, attempts=row.attempts + 1,
    )  # fmt: skip
    return new, "failed", outcome.why


def stage_event(row: RenewalRow, new: RenewalRow, outcome: Outcome, now: datetime) -> Event | None:
    """The event announcing a stage's outcome (None: a wait that goes on is not news)."""
    common = {"target": row.target, "renewal_id": row.id, "stage": row.stage}
    if isinstance(outcome, Advance):
        return StageSucceeded(time=now, detail=outcome.detail, **common)
    if isinstance(outcome, Wait):
        if row.status == "waiting":
            return None  # announced when the wait began
        if outcome.approval:
            new_cas = new.data.get("trust_cas", []) if new.data.get("ca_changed") else []
            return ApprovalRequired(
                time=now, why=outcome.why,
                new_ca_sha256=tuple(c["sha256"] for c in new_cas), **common,
            )  # fmt: skip
        return StageWaiting(time=now, until=outcome.until.isoformat(), why=outcome.why, **common)
    if isinstance(outcome, Blocked):
        return RenewalBlocked(time=now, why=outcome.why, **common)
    return StageFailed(time=now, why=outcome.why, retry_at=outcome.retry_at.isoformat(), **common)


# ---- collaborators -------------------------------------------------------------------------


class Devices(Protocol):
    """Makes the device clients (real ones against boxes or simulators; fakes in unit tests)."""

    def expressway(
        self, target: ExpresswayConfig
    ) -> AbstractAsyncContextManager[ExpresswayClient]: ...

    def unified_cm(self, ucm: UnifiedCMConfig) -> AbstractAsyncContextManager[CucmClient]: ...


class ConfiguredDevices:
    """Clients built from the config: credentials are read from their secret references."""

    def __init__(self, overrides: Mapping[str, Any] | None = None) -> None:
        self._overrides = dict(overrides or {})

    def expressway(self, target: ExpresswayConfig) -> ExpresswayClient:
        return ExpresswayClient(ExpresswayClientConfig.from_target(target, **self._overrides))

    def unified_cm(self, ucm: UnifiedCMConfig) -> CucmClient:
        return CucmClient(CucmClientConfig.from_config(ucm))


async def _no_checkpoint() -> None:
    """Contexts outside the runner (unit tests) persist nothing mid-stage."""


@dataclass
class Context:
    """What a stage works with; `data` is persisted after every stage."""

    renewal_id: str
    target: ExpresswayConfig
    config: Config
    devices: Devices
    ca: CAConnector
    ca_name: str
    prober: Prober
    now: Callable[[], datetime]
    data: dict[str, Any]
    cluster_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    store: Store | None = None  # for leases shared with other processes
    owner: str = ""
    # Persists `data` now, inside a stage (progress that must survive a crash mid-stage).
    checkpoint: Callable[[], Awaitable[None]] = field(default=_no_checkpoint)

    @property
    def plan(self) -> Plan:
        raw = dict(self.data["plan"])
        for key in ("sans", "required_eku", "zones", "notes"):
            raw[key] = tuple(raw.get(key, ()))
        return Plan(**raw)

    def csr(self) -> x509.CertificateSigningRequest:
        return x509.load_pem_x509_csr(self.data["csr_pem"].encode())

    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.data["issued"]["leaf_pem"].encode())

    def chain(self) -> list[x509.Certificate]:
        pem = self.data["issued"]["chain_pem"]
        return list(x509.load_pem_x509_certificates(pem.encode())) if pem else []


def _sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _retry(ctx: Context, why: str) -> Failed:
    attempts = int(ctx.data.get("_attempts", 0))
    delay = RETRY_BACKOFF[min(attempts, len(RETRY_BACKOFF) - 1)]
    return Failed(why, ctx.now() + delay)


# ---- stages --------------------------------------------------------------------------------


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


def _zone_kinds(role: str | None, zones: list[dict[str, Any]]) -> list[str]:
    kinds = []
    for z in zones:
        kind = str(z.get("kind", "")).lower()
        if "traversal" in kind and role == "c":
            kinds.append("traversal-client")
        if "unified" in kind or "neighbo" in kind:
            kinds.append("unified-cm")
    return sorted(set(kinds))


async def stage_preflight(ctx: Context) -> Outcome:
    """Decide the SANs and the EKU the new certificate needs; refuse a CA that cannot deliver."""
    snap = ctx.data["snapshot"]
    current = x509.load_pem_x509_certificate(snap["cert_pem"].encode())
    renewal = ctx.target.renewal
    assert renewal is not None
    plan = make_plan(
        ctx.target.name,
        facts_from_x509(current),
        role=snap["role"],
        version=snap["version"],
        cluster_fqdn=ctx.target.cluster,
        extra_sans=renewal.extra_sans,
        zones=_zone_kinds(snap["role"], snap["zones"]),
        server_eku_upload=snap.get("server_eku_upload"),
        peer_version=snap.get("peer_version"),
        max_lifetime_days=renewal.max_lifetime.days,
        require_eku=renewal.require_eku,
    )
    ctx.data["plan"] = dataclasses.asdict(plan)
    problems = preflight(
        plan, ctx.ca_name, ctx.ca.capabilities().ekus, acme_scheduler=snap.get("acme_scheduler")
    )
    if problems:
        return Blocked("; ".join(p.message for p in problems))
    names = {"1.3.6.1.5.5.7.3.1": "serverAuth", "1.3.6.1.5.5.7.3.2": "clientAuth"}
    ekus = "+".join(names.get(e, e) for e in plan.required_eku)
    return Advance(f"SANs {', '.join(plan.sans)}; EKU {ekus} (rule {plan.eku_rule})")


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
                reused = (
                    ctx.data.get("csr_pem")
                    == pending.public_bytes(serialization.Encoding.PEM).decode()
                )
                ctx.data["csr_pem"] = pending.public_bytes(serialization.Encoding.PEM).decode()
                return Advance(
                    "CSR already generated" if reused else "reused the CSR pending on the box"
                )
            return Blocked(
                f"{ctx.target.name}: a CSR is pending on the box for {', '.join(csr_sans(pending))}, "
                f"not the planned {', '.join(plan.sans)}; it is kept (a certificate signed for a "
                "discarded CSR cannot be installed): get it signed and installed by hand, or "
                "discard it on the box (Maintenance > Security > Server certificate), then run "
                f"'expressway-certd renew {ctx.target.name} --now'"
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
    ctx.data["csr_pem"] = csr.public_bytes(serialization.Encoding.PEM).decode()
    return Advance(f"CSR generated on the box for {len(plan.sans)} names")


def _store_issued(ctx: Context, issued: Issued) -> str:
    ctx.data["issued"] = {
        "leaf_pem": cert_pem(issued.leaf),
        "chain_pem": "".join(cert_pem(c) for c in issued.chain),
        "profile": issued.profile,
    }
    ctx.data.pop("handle", None)
    return f"issued {_sha256(issued.leaf)[:16]}"


def _pending_reason(ctx: Context, pending: Pending) -> str:
    if not pending.awaits_provide:
        return pending.reason
    return (
        f"{pending.reason}, then run 'expressway-certd provide {ctx.renewal_id} "
        "--cert CERT.pem [--chain CHAIN.pem]'"
    )


async def stage_submit(ctx: Context) -> Outcome:
    """Send the CSR to the CA once; a handle or the issued certificate is persisted."""
    if "issued" in ctx.data or "handle" in ctx.data:
        return Advance("already submitted")
    result = await ctx.ca.submit(ctx.csr())
    if isinstance(result, Issued):
        return Advance(_store_issued(ctx, result))
    ctx.data["handle"] = result.handle
    ctx.data["retry_at"] = result.retry_at.isoformat()
    ctx.data["pending_reason"] = _pending_reason(ctx, result)
    return Advance(f"pending at the CA: {ctx.data['pending_reason']}")


async def stage_issued(ctx: Context) -> Outcome:
    """Ask the CA again (by the persisted handle) until it issues."""
    if "issued" in ctx.data:
        return Advance("certificate at hand")
    if "retry_at" in ctx.data:
        retry_at = datetime.fromisoformat(ctx.data["retry_at"])
        if retry_at > ctx.now():
            return Wait(retry_at, ctx.data.get("pending_reason") or "the CA has not issued yet")
    result = await ctx.ca.poll(ctx.data["handle"])
    if isinstance(result, Pending):
        ctx.data["handle"] = result.handle
        ctx.data["retry_at"] = result.retry_at.isoformat()
        ctx.data["pending_reason"] = _pending_reason(ctx, result)
        return Wait(result.retry_at, f"pending at the CA: {ctx.data['pending_reason']}")
    ctx.data.pop("retry_at", None)
    return Advance(_store_issued(ctx, result))


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
            chain += [r for r in roots if _issued_by(top, r)][:1]
        ctx.data["issued"]["chain_pem"] = "".join(cert_pem(c) for c in chain)
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
            f"'expressway-certd renew {ctx.target.name} --now'"
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
            )
        )
    facts = facts_from_x509(issuance.leaf)
    ctx.data["ca_changed"] = facts.aki != ctx.data["snapshot"]["aki"]
    if ctx.data["ca_changed"]:
        found = _pinned_path(ctx, "validate")
        if isinstance(found, Blocked):
            return found
        ctx.data["trust_cas"] = [
            {"sha256": _sha256(c), "subject": c.subject.rfc4514_string()} for c in found
        ]
    return Advance(
        f"SANs, EKU, KU, key, validity and chain OK; not after {facts.not_after:%Y-%m-%d}"
        + (
            "; new CA, chains to a pinned anchor: "
            + ", ".join(f"{c['subject']} SHA-256 {c['sha256']}" for c in ctx.data["trust_cas"])
            if ctx.data["ca_changed"]
            else ""
        )
    )


def _pinned_path(ctx: Context, stage: str) -> list[x509.Certificate] | Blocked:
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
            f"(or 'expressway-certd cancel {ctx.renewal_id}')"
        )
    path = trust_path(ctx.leaf(), ctx.chain(), anchors)
    if path is None:
        return Blocked(
            f"{where} does not chain to a root pinned for CA '{ctx.ca_name}' "
            f"({'; '.join(anchors.sources)}); nothing was installed or trusted; if the chain is "
            f"wrong, hand in the right one ('expressway-certd provide {ctx.renewal_id} --cert "
            f"CERT.pem --chain CHAIN.pem'); if the CA is right, {anchors.fix} and run "
            f"'expressway-certd renew {ctx.target.name} --now'"
        )
    return path


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
    old_aki = ctx.data["snapshot"]["aki"]
    ctx.data["ca_changed"] = leaf.aki != old_aki
    if not ctx.data["ca_changed"]:
        return Advance(f"same CA (AKI {(leaf.aki or '-')[:16]}): no trust changes needed")
    # Checked again here: the configuration may have changed since validate.
    found = _pinned_path(ctx, "trust")
    if isinstance(found, Blocked):
        return found
    cas = found
    done: list[str] = []
    for box_cfg in trust_boxes(ctx.config, ctx.target):
        async with ctx.devices.expressway(box_cfg) as box:
            added = await box.add_trusted_cas(cas)
        done.append(f"{box_cfg.name} (+{len(added)})")
    role = ctx.data["snapshot"]["role"]
    if role == "c" and ctx.target.unified_cm:
        ucm = ctx.config.unified_cm(ctx.target.unified_cm)
        # The C peers of a cluster share their Unified CM: one renewal at a time changes its
        # trust. Its services restart later, in stage ucm-restart (after approval, in a window).
        async with _exclusive(ctx, f"cucm:{ucm.name}") as holder:
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


async def stage_approve(ctx: Context) -> Outcome:
    """Optional gate before anything on the box changes."""
    renewal = ctx.target.renewal
    assert renewal is not None
    mode = renewal.approval
    if mode == "auto":
        return Advance("approval mode auto")
    if mode == "manual-if-ca-changed" and not ctx.data.get("ca_changed"):
        return Advance("same CA: no approval needed")
    if ctx.data.get("approved_by"):
        return Advance(f"approved by {ctx.data['approved_by']}")
    new_cas = ", ".join(c["sha256"] for c in ctx.data.get("trust_cas", []))
    why = (
        f"the CA changed (new CA SHA-256 {new_cas})"
        if ctx.data.get("ca_changed")
        else "approval mode manual"
    )
    return Wait(ctx.now() + timedelta(hours=1), why, approval=True)


def _cucm_window(ctx: Context, ucm: UnifiedCMConfig) -> MaintenanceWindow | None:
    """The Unified CM's own maintenance window, else the renewal target's."""
    renewal = ctx.target.renewal
    assert renewal is not None
    return ucm.maintenance_window or renewal.maintenance_window


def _restart_order(services: Sequence[str]) -> list[str]:
    """Control Center services first, Cisco Tomcat last (its restart drops the API)."""
    return [s for s in services if s != TOMCAT] + [s for s in services if s == TOMCAT]


async def stage_ucm_restart(ctx: Context) -> Outcome:
    """Restart the Unified CM services that read the trust stores the trust stage changed
    (Cisco CallManager, Tftp, Tomcat): after the approval gate, inside the Unified CM's
    maintenance window (else the target's), node by node in `nodes` order (publisher first).
    Every finished service is persisted at once, so a retry or a new process never restarts
    what already restarted; a service not activated on a node is skipped."""
    role = ctx.data["snapshot"]["role"]
    if not ctx.data.get("ca_changed") or role != "c" or not ctx.target.unified_cm:
        return Advance("no Unified CM trust change: nothing to restart")
    ucm = ctx.config.unified_cm(ctx.target.unified_cm)
    services = _restart_order(ucm.restart_services)
    progress: dict[str, dict[str, str]] = ctx.data.setdefault("cucm_restarts", {})
    window = _cucm_window(ctx, ucm)

    def pending(node: str) -> list[str]:
        return [s for s in services if s not in progress.get(node, {})]

    if all(not pending(node) for node in ucm.nodes):
        return Advance(_ucm_summary(ucm, progress))
    # Two Tomcat restarts at once fail each other: one renewal at a time per Unified CM.
    async with _exclusive(ctx, f"cucm:{ucm.name}") as holder:
        if holder is not None:
            return Wait(
                ctx.now() + timedelta(seconds=15),
                f"another renewal ({holder}) is restarting services of Unified CM {ucm.name}",
            )
        async with ctx.devices.unified_cm(ucm) as cm:
            for node in ucm.nodes:
                for service in pending(node):
                    if window is not None:
                        now = ctx.now()
                        start = next_window_start(window, now)
                        if start > now:
                            return Wait(
                                start,
                                f"Unified CM {ucm.name}: restarting {service} on {node} waits "
                                f"for the maintenance window ({window.cron} {window.timezone})",
                            )
                    result = await cm.restart_service(node, service)
                    progress.setdefault(node, {})[service] = result
                    await ctx.checkpoint()
                    _test_kill_after(ctx.target.name, f"ucm-restart:{node}:{service}")
    return Advance(_ucm_summary(ucm, progress))


def _ucm_summary(ucm: UnifiedCMConfig, progress: dict[str, dict[str, str]]) -> str:
    parts = []
    for node in ucm.nodes:
        done = progress.get(node, {})
        restarted = [s for s, r in done.items() if r == RESTARTED]
        skipped = [s for s, r in done.items() if r != RESTARTED]
        text = f"{node} restarted {', '.join(restarted) or 'nothing'}"
        if skipped:
            text += f" (not activated: {', '.join(skipped)})"
        parts.append(text)
    return f"Unified CM {ucm.name}: " + "; ".join(parts)


async def stage_install(ctx: Context) -> Outcome:
    """Step E (upload): the leaf only, PEM; compared with what is installed first."""
    leaf = ctx.leaf()
    async with ctx.devices.expressway(ctx.target) as box:
        installed = await box.server_certificate()
        if installed == leaf:
            ctx.data["installed_sha256"] = _sha256(leaf)
            return Advance("already installed")
        await box.upload_server_certificate(leaf)
        if await box.server_certificate() != leaf:
            return _retry(ctx, "the box accepted the upload but does not show the new certificate")
    ctx.data["installed_sha256"] = _sha256(leaf)
    return Advance(f"uploaded {_sha256(leaf)[:16]} (active after restart)")


async def _served_everywhere(ctx: Context, sha256: str) -> tuple[bool, list[str]]:
    observations = await asyncio.gather(
        *(ctx.prober.probe(ctx.target.name, ep) for ep in ctx.target.endpoints)
    )
    stale = [
        f"{o.endpoint.address} ({o.error_class or (o.facts.sha256[:12] if o.facts else '?')})"
        for o in observations
        if not (o.ok and o.facts is not None and o.facts.sha256 == sha256)
    ]
    return not stale, stale


@contextlib.asynccontextmanager
async def _exclusive(ctx: Context, name: str) -> AsyncIterator[str | None]:
    """Hold `name` against other renewals: an in-process lock, and a lease in the database
    for other processes (CLI, HA peers). Yields None when held, else who holds it."""
    lock = ctx.cluster_locks.setdefault(name, asyncio.Lock())
    async with lock:
        if ctx.store is not None and not await take_lease(ctx.store, name, ctx.owner, ctx.now()):
            yield await ctx.store.lease_owner(name) or "another process"
            return
        store = ctx.store
        try:
            if store is None:
                yield None
            else:
                async with keep_alive(lambda: store.claim_lease(name, ctx.owner, ctx.now(), LEASE)):
                    yield None
        finally:
            if store is not None:
                await store.release_lease(name, ctx.owner)


async def stage_restart(ctx: Context) -> Outcome:
    """Step E (restart) inside the maintenance window; cluster peers one at a time."""
    sha = ctx.data["installed_sha256"]
    serving, _ = await _served_everywhere(ctx, sha)
    if serving:
        return Advance("already serving the new certificate")
    renewal = ctx.target.renewal
    assert renewal is not None
    now = ctx.now()
    if renewal.maintenance_window is not None:
        start = next_window_start(renewal.maintenance_window, now)
        if start > now:
            return Wait(
                start,
                f"outside the maintenance window ({renewal.maintenance_window.cron} {renewal.maintenance_window.timezone})",
            )
    group = ctx.target.cluster or ctx.target.name
    # One peer of a cluster restarts at a time, each back and serving before the next.
    async with _exclusive(ctx, f"restart:{group}") as holder:
        if holder is not None:
            return Wait(
                ctx.now() + timedelta(seconds=15),
                f"another process ({holder}) is restarting a peer of {group}",
            )
        async with ctx.devices.expressway(ctx.target) as box:
            how = await box.restart(wait=True)
        deadline = time.monotonic() + renewal.verify_timeout.total_seconds()
        while True:
            serving, stale = await _served_everywhere(ctx, sha)
            if serving:
                break
            if time.monotonic() > deadline:
                return _retry(
                    ctx,
                    f"restarted (via {how}) but not serving the new certificate on "
                    f"{', '.join(stale)}",
                )
            await asyncio.sleep(0.5)
    return Advance(f"restarted via {how}; serving the new certificate on every endpoint")


async def stage_verify(ctx: Context) -> Outcome:
    """Every endpoint serves the new fingerprint and the traversal / Unified CM zones are Active."""
    sha = ctx.data["installed_sha256"]
    serving, stale = await _served_everywhere(ctx, sha)
    problems = [] if serving else [f"not serving the new certificate on {', '.join(stale)}"]
    async with ctx.devices.expressway(ctx.target) as box:
        zones = await box.zones()
    seen_before = [str(z.get("name", "")) for z in ctx.data["snapshot"].get("zones", [])]
    readings = [ZoneReading(z.name, z.state, z.reason) for z in zones]
    problems += [p.message for p in check_zones(ctx.target.name, readings, seen_before)]
    if not problems:
        return Advance(
            f"{len(ctx.target.endpoints)} endpoints serve {sha[:16]}; {len(zones)} zones Active"
        )
    renewal = ctx.target.renewal
    assert renewal is not None
    deadline = datetime.fromisoformat(
        ctx.data.setdefault("verify_deadline", (ctx.now() + renewal.verify_timeout).isoformat())
    )
    if ctx.now() < deadline:
        return Wait(ctx.now() + timedelta(seconds=5), "; ".join(problems))
    return Blocked(
        f"{ctx.target.name}: after installing, "
        + "; ".join(problems)
        + ": check the traversal peer's trusted CA list and the box's alarms"
    )


STAGE_FUNCTIONS: dict[str, Callable[[Context], Awaitable[Outcome]]] = {
    "snapshot": stage_snapshot,
    "preflight": stage_preflight,
    "csr": stage_csr,
    "submit": stage_submit,
    "issued": stage_issued,
    "validate": stage_validate,
    "trust": stage_trust,
    "approve": stage_approve,
    "ucm-restart": stage_ucm_restart,
    "install": stage_install,
    "restart": stage_restart,
    "verify": stage_verify,
}


# ---- the runner ----------------------------------------------------------------------------


def accepts_certificate(row: RenewalRow) -> bool:
    """`provide` may hand in a certificate: while waiting for the CA, or after validate (or
    the trust stage's pinned-anchor check) refused the one at hand."""
    if not row.active:
        return False
    return row.stage in ("submit", "issued") or (
        row.status == "blocked" and row.stage in ("validate", "trust")
    )


def ways_out(row: RenewalRow) -> tuple[str, ...]:
    """The operator commands that move a renewal in this state on (docs/renewal.md, "Ways
    out"); empty for a finished one."""
    if not row.active:
        return ()
    out = [f"expressway-certd cancel {row.id}"]
    if row.status in ("blocked", "failed"):
        out.append(f"expressway-certd renew {row.target}")
    if row.status == "waiting" and row.stage == "approve":
        out.append(f"expressway-certd approve {row.id}")
    if accepts_certificate(row):
        out.append(f"expressway-certd provide {row.id} --cert CERT.pem [--chain CHAIN.pem]")
    return tuple(out)


def _gone_from_this_host(owner: str) -> bool:
    """True when a lease owner ("host:pid:token") is a process of this host that has ended.
    Holders on other hosts are never judged: their lease runs out instead."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False  # our own pid: another pipeline of this process (tests), alive
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, owned by another user
    return False


async def claim_or_take_over(
    name: str,
    claim: Callable[[str | None], Awaitable[bool]],
    holder: Callable[[], Awaitable[str | None]],
) -> bool:
    """The one rule of every lock (a renewal's lease, `restart:<cluster>`, `cucm:<name>`):
    take it when free or expired; take it at once from a holder that was a process of this
    host and is gone (a killed process never releases its lease; without this the next one
    would wait out the whole LEASE); otherwise leave it to its live holder, or to expiry
    for holders on other hosts. `claim(None)` claims normally, `claim(owner)` also takes it
    from `owner`."""
    if await claim(None):
        return True
    gone = await holder()
    if gone is None or not _gone_from_this_host(gone):
        return False
    log.warning("taking over the lease of a process that is gone", lease=name, holder=gone)
    return await claim(gone)


async def take_lease(store: Store, name: str, owner: str, now: datetime) -> bool:
    """Claim the named lease (see claim_or_take_over)."""
    return await claim_or_take_over(
        name,
        lambda gone: store.claim_lease(name, owner, now, LEASE, take_from=gone),
        lambda: store.lease_owner(name),
    )


StageObserver = Callable[[str, str, str, float], None]  # target, stage, result, seconds


class Pipeline:
    """Starts, runs and resumes renewals; one at a time per target."""

    def __init__(
        self,
        config: Config,
        store: Store,
        bus: EventBus,
        prober: Prober,
        connectors: Mapping[str, CAConnector],
        *,
        devices: Devices | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        observe: StageObserver | None = None,
        stop_after: Callable[[str], bool] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.bus = bus
        self.prober = prober
        self.connectors = connectors
        self.devices: Devices = devices or ConfiguredDevices()
        self.clock = clock
        self.observe = observe
        self._stop_after = stop_after
        self._locks: dict[str, asyncio.Lock] = {}
        self._cluster_locks: dict[str, asyncio.Lock] = {}
        self.latest: dict[str, RenewalRow] = {}
        # Leases make the database the arbiter when several processes (CLI, daemon, HA peers)
        # could run the same renewal: only the holder runs stages.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"

    async def load(self) -> None:
        for row in reversed(await self.store.renewals_for(limit=10_000)):
            self.latest[row.target] = row

    async def start(self, target: str, reason: str) -> RenewalRow:
        """Create a renewal for `target` unless one is active (then that one is returned)."""
        exp = self.config.target(target)
        if exp.renewal is None:
            raise CertdError(
                f"{target}: renewal is not configured; add an [expressway.renewal] table with ca = ..."
            )
        now = self.clock()
        row = RenewalRow(
            id=now.strftime("%Y%m%d") + "-" + secrets.token_hex(4),
            target=target,
            status="running",
            stage=STAGES[0],
            reason=reason,
            created_at=now,
            updated_at=now,
            next_at=None,
            attempts=0,
            message="",
            data={},
        )
        stored = await self.store.create_renewal(row)
        self.latest[target] = stored
        if stored.id == row.id:
            log.info("renewal started", target=target, renewal=row.id, reason=reason)
            _test_kill_after(target, "start")
        return stored

    @contextlib.asynccontextmanager
    async def _hold(self, renewal_id: str) -> AsyncIterator[RenewalRow]:
        """Hold a renewal for an operator command: this process's run of it and the lease in
        the database (taken over from a dead same-host holder), then read it afresh, so the
        command never writes from a stale row nor while a stage runs."""
        row = await self._get(renewal_id)
        lock = self._locks.setdefault(row.target, asyncio.Lock())
        try:
            # This process's run of the renewal lets go between stages and when it waits.
            await asyncio.wait_for(lock.acquire(), BUSY_WAIT.total_seconds())
        except TimeoutError:
            raise CertdError(
                f"renewal {renewal_id}: busy: a stage is running in this process; try again "
                "in a moment"
            ) from None
        try:
            if not await self._claim(renewal_id):
                holder = await self.store.renewal_lease_owner(renewal_id)
                raise CertdError(
                    f"renewal {renewal_id}: busy: a stage is running in another process "
                    f"({holder}); try again in a moment"
                )
            try:
                yield await self._get(renewal_id)
            finally:
                await self.store.release_renewal(renewal_id, self.owner)
        finally:
            lock.release()

    async def approve(self, renewal_id: str, who: str) -> RenewalRow:
        async with self._hold(renewal_id) as held:
            row = held  # as it is now that this process holds it
            if row.stage != "approve" or row.status != "waiting":
                raise CertdError(
                    f"renewal {renewal_id}: not awaiting approval (stage {row.stage}, {row.status})"
                )
            data = {**row.data, "approved_by": who}
            row = dataclasses.replace(row, data=data, next_at=self.clock(), updated_at=self.clock())
            await self.store.save_renewal(row, owner=self.owner)
        self.latest[row.target] = row
        return row

    async def provide(
        self, renewal_id: str, leaf: x509.Certificate, chain: list[x509.Certificate]
    ) -> RenewalRow:
        """An operator hands in the certificate for the renewal's CSR (manual CAs, any CA
        whose request was completed by hand, or in place of one validate refused).
        Validation still runs before anything else."""
        async with self._hold(renewal_id) as held:
            row = held  # as it is now that this process holds it
            if not accepts_certificate(row):
                raise CertdError(
                    f"renewal {renewal_id}: not waiting for a certificate (stage {row.stage}, "
                    f"{row.status}); a certificate can be handed in while the renewal waits at "
                    "submit or issued, or after validate refused one; to start over run "
                    f"'expressway-certd cancel {renewal_id}', then 'expressway-certd renew "
                    f"{row.target} --now'"
                )
            csr_pem = row.data.get("csr_pem")
            if not csr_pem:
                raise CertdError(f"renewal {renewal_id}: no CSR yet")
            csr = x509.load_pem_x509_csr(csr_pem.encode())
            spki = serialization.PublicFormat.SubjectPublicKeyInfo
            if leaf.public_key().public_bytes(
                serialization.Encoding.DER, spki
            ) != csr.public_key().public_bytes(serialization.Encoding.DER, spki):
                raise CertdError(
                    f"renewal {renewal_id}: the certificate is not for this renewal's CSR (public keys "
                    f"differ); sign the CSR shown by 'expressway-certd status {row.target}'"
                )
            data = dict(row.data)
            data["issued"] = {
                "leaf_pem": cert_pem(leaf),
                "chain_pem": "".join(cert_pem(c) for c in chain),
                "profile": "provided",
            }
            for stale in ("retry_at", "trust_cas", "ca_changed", "handle", "pending_reason"):
                data.pop(stale, None)
            row = dataclasses.replace(
                row, stage="issued", status="running", next_at=None, data=data,
                updated_at=self.clock(), attempts=0,
            )  # fmt: skip
            await self.store.save_renewal(
                row, StepRow(row.id, "issued", "provided", self.clock(), 0.0,
                             f"certificate {_sha256(leaf)[:16]} handed in by an operator"),
                owner=self.owner,
            )  # fmt: skip
        self.latest[row.target] = row
        return row

    async def cancel(self, renewal_id: str, who: str) -> RenewalRow:
        """An operator ends an active renewal in any state; `renew --now` then starts afresh.
        What was done on the boxes stays as it is (a pending CSR, trust already added, an
        uploaded certificate waiting for its restart): docs/renewal.md says what to check."""
        async with self._hold(renewal_id) as held:
            row = held  # as it is now that this process holds it
            if not row.active:
                raise CertdError(
                    f"renewal {renewal_id}: already {row.status}; nothing to cancel "
                    f"(start a new one with 'expressway-certd renew {row.target} --now')"
                )
            now = self.clock()
            message = f"cancelled by {who} at stage {row.stage} ({row.status})"
            row = dataclasses.replace(
                row, status="cancelled", next_at=None, message=message, updated_at=now
            )
            await self.store.save_renewal(
                row, StepRow(row.id, row.stage, "cancelled", now, 0.0, message), owner=self.owner
            )
        self.latest[row.target] = row
        log.warning("renewal cancelled", target=row.target, renewal=row.id, by=who)
        await self.bus.publish(
            RenewalCancelled(
                target=row.target, time=now, renewal_id=row.id, stage=row.stage, by=who
            )
        )
        return row

    async def retry_now(self, renewal_id: str) -> RenewalRow:
        """Operator says the cause of a blocked/failed stage is fixed: run that stage again."""
        async with self._hold(renewal_id) as held:
            row = held  # as it is now that this process holds it
            if not row.active:
                raise CertdError(f"renewal {renewal_id}: already {row.status}")
            row = dataclasses.replace(row, status="running", next_at=None, updated_at=self.clock())
            await self.store.save_renewal(row, owner=self.owner)
        self.latest[row.target] = row
        return row

    async def _get(self, renewal_id: str) -> RenewalRow:
        row = await self.store.renewal(renewal_id)
        if row is None:
            raise CertdError(
                f"renewal {renewal_id}: no such renewal (see 'expressway-certd status')"
            )
        return row

    async def run(self, renewal_id: str) -> RenewalRow:
        """Run stages until the renewal waits, blocks, fails or is done."""
        row = await self._get(renewal_id)
        lock = self._locks.setdefault(row.target, asyncio.Lock())
        async with lock:
            try:
                while True:
                    row = await self._get(renewal_id)
                    self.latest[row.target] = row
                    if not row.active or row.status == "blocked":
                        return row
                    if row.next_at is not None and row.next_at > self.clock():
                        return row
                    if not await self._claim(renewal_id):
                        log.info("renewal run by another process", renewal=renewal_id)
                        return row
                    # Read again now that nobody else may write it: an operator command or
                    # another process may have changed it since the read above.
                    row = await self._get(renewal_id)
                    self.latest[row.target] = row
                    if not row.active or row.status == "blocked":
                        return row
                    if row.next_at is not None and row.next_at > self.clock():
                        return row
                    async with keep_alive(
                        lambda: self.store.claim_renewal(
                            renewal_id, self.owner, self.clock(), LEASE
                        )
                    ):
                        row = await self._step(row)
                    if self._stop_after is not None and self._stop_after(row.stage):
                        return row
            finally:
                await self.store.release_renewal(renewal_id, self.owner)

    async def _claim(self, renewal_id: str) -> bool:
        store, owner, now = self.store, self.owner, self.clock()
        return await claim_or_take_over(
            f"renewal {renewal_id}",
            lambda gone: store.claim_renewal(renewal_id, owner, now, LEASE, take_from=gone),
            lambda: store.renewal_lease_owner(renewal_id),
        )

    async def run_due(self, owns: Callable[[str], bool] | None = None) -> None:
        """Resume every active renewal whose time has come (the scheduler calls this); with
        `owns`, only those of the targets it accepts (a replica runs its own targets')."""
        active = await self.store.renewals_for(active_only=True, limit=10_000)
        # A renewal another process finished (CLI `renew`, an HA peer) is no longer active:
        # refresh what this process believes, so metrics and the policy see it.
        active_ids = {r.id for r in active}
        for target, cached in list(self.latest.items()):
            if cached.active and cached.id not in active_ids:
                fresh = await self.store.renewal(cached.id)
                if fresh is not None:
                    self.latest[target] = fresh
        for row in active:
            self.latest[row.target] = row
            if row.status == "blocked" or (owns is not None and not owns(row.target)):
                continue
            lock = self._locks.get(row.target)
            if lock is not None and lock.locked():
                continue  # being run right now
            if row.next_at is None or row.next_at <= self.clock():
                try:
                    await self.run(row.id)
                except CertdError as exc:
                    log.error("renewal run failed", renewal=row.id, error=str(exc))
                except Exception:  # never let one renewal stop the others this tick
                    log.exception("renewal run failed", renewal=row.id)

    async def _checkpoint(self, row: RenewalRow, data: dict[str, Any]) -> None:
        """Persist a stage's progress in `data` without ending the stage (same status and
        stage), only while this process holds the renewal's lease."""
        saved = {k: v for k, v in data.items() if k != "_attempts"}
        await self.store.save_renewal(
            dataclasses.replace(row, data=saved, updated_at=self.clock()), owner=self.owner
        )

    async def _step(self, row: RenewalRow) -> RenewalRow:
        exp = self.config.target(row.target)
        assert exp.renewal is not None
        ca_name = exp.renewal.ca
        data = dict(row.data)
        data["_attempts"] = row.attempts
        ctx = Context(
            renewal_id=row.id,
            target=exp,
            config=self.config,
            devices=self.devices,
            ca=self.connectors[ca_name],
            ca_name=ca_name,
            prober=self.prober,
            now=self.clock,
            data=data,
            cluster_locks=self._cluster_locks,
            store=self.store,
            owner=self.owner,
            checkpoint=lambda: self._checkpoint(row, data),
        )
        stage = row.stage
        common = {"target": row.target, "renewal_id": row.id, "stage": stage}
        if row.attempts == 0 and row.status == "running":
            await self.bus.publish(StageStarted(time=self.clock(), **common))
        started = time.monotonic()
        try:
            outcome = await STAGE_FUNCTIONS[stage](ctx)
        except CARequestError as exc:
            outcome = _retry(ctx, str(exc)) if exc.retryable else Blocked(str(exc))
        except (OperationUnsupported, CertificateEkuRefused, TrustedCasLost) as exc:
            outcome = Blocked(str(exc))  # retrying cannot help: the operator must act
        except (DeviceError, CAError) as exc:
            outcome = _retry(ctx, str(exc))
        except CertdError as exc:
            outcome = Blocked(str(exc))
        except (OSError, TimeoutError) as exc:
            outcome = _retry(ctx, f"{row.target}: {stage}: {type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug or an unforeseen answer: this renewal alone fails
            log.exception("stage raised", target=row.target, renewal=row.id, stage=stage)
            outcome = _retry(
                ctx,
                f"{row.target}: {stage}: unexpected {type(exc).__name__}: {exc}; retried with "
                "backoff; the traceback is in the log; if it repeats, cancel the renewal "
                f"('expressway-certd cancel {row.id}') and report it",
            )
        seconds = time.monotonic() - started
        data.pop("_attempts", None)
        now = self.clock()
        new, result, message = transition(row, outcome, now, data)
        event = stage_event(row, new, outcome, now)
        _test_kill_after(row.target, f"{stage}-unsaved")
        # Persist first: whatever happens next, a new process resumes from here.
        await self.store.save_renewal(
            new, StepRow(row.id, stage, result, now, round(seconds, 3), message), owner=self.owner
        )
        _test_kill_after(row.target, stage)
        self.latest[row.target] = new
        if self.observe is not None:
            self.observe(row.target, stage, result, seconds)
        log.info(
            "renewal stage",
            target=row.target,
            renewal=row.id,
            stage=stage,
            result=result,
            detail=message,
        )
        if event is not None:
            await self.bus.publish(event)
        if new.status == "done":
            leaf = x509.load_pem_x509_certificate(data["issued"]["leaf_pem"].encode())
            await self.bus.publish(
                RenewalCompleted(
                    target=row.target,
                    time=now,
                    renewal_id=row.id,
                    new_sha256=_sha256(leaf),
                    not_after=leaf.not_valid_after_utc.isoformat(),
                )
            )
        return new
