"""Events: small frozen records of what happened, and the in-process bus that delivers them.

Every event is appended to the store's audit log by a subscriber the daemon wires in; notifiers
(alerts/) subscribe the same way. A failing subscriber is logged and never stops the others.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import structlog

log = structlog.get_logger("monitor.events")


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base: which target, when, and the renewal it belongs to (if any)."""

    type: ClassVar[str] = "Event"
    severity: ClassVar[str] = "info"
    target: str
    time: datetime
    renewal_id: str | None = None

    def payload(self) -> dict[str, Any]:
        """Fields beyond target/time/renewal_id, JSON-ready."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("target", "time", "renewal_id"):
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def summary(self) -> str:
        return self.type


@dataclass(frozen=True, kw_only=True)
class EndpointEvent(Event):
    endpoint: str  # "host:port"
    service: str = ""


@dataclass(frozen=True, kw_only=True)
class ProbeFailed(EndpointEvent):
    type: ClassVar[str] = "ProbeFailed"
    severity: ClassVar[str] = "warning"
    error_class: str
    error: str

    def summary(self) -> str:
        return f"{self.target} {self.endpoint}: probe failed ({self.error_class}): {self.error}"


@dataclass(frozen=True, kw_only=True)
class ProbeRecovered(EndpointEvent):
    type: ClassVar[str] = "ProbeRecovered"
    previous_error_class: str

    def summary(self) -> str:
        return f"{self.target} {self.endpoint}: probe recovered (was {self.previous_error_class})"


@dataclass(frozen=True, kw_only=True)
class CertChanged(EndpointEvent):
    type: ClassVar[str] = "CertChanged"
    old_sha256: str
    new_sha256: str
    new_not_after: str

    def summary(self) -> str:
        return (
            f"{self.target} {self.endpoint}: serves a new certificate "
            f"{self.new_sha256[:16]} (not after {self.new_not_after})"
        )


@dataclass(frozen=True, kw_only=True)
class SANsChanged(EndpointEvent):
    type: ClassVar[str] = "SANsChanged"
    severity: ClassVar[str] = "warning"
    added: tuple[str, ...] = field(default=())
    removed: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        return (
            f"{self.target} {self.endpoint}: SANs changed "
            f"(added {', '.join(self.added) or 'none'}; removed {', '.join(self.removed) or 'none'})"
        )


@dataclass(frozen=True, kw_only=True)
class IssuerChanged(EndpointEvent):
    type: ClassVar[str] = "IssuerChanged"
    severity: ClassVar[str] = "warning"
    old_issuer: str
    new_issuer: str
    old_aki: str | None
    new_aki: str | None

    def summary(self) -> str:
        return (
            f"{self.target} {self.endpoint}: issuer changed from {self.old_issuer} to "
            f"{self.new_issuer}; traversal peers and Unified CM must trust the new CA"
        )


@dataclass(frozen=True, kw_only=True)
class ExpiryWindowEntered(EndpointEvent):
    type: ClassVar[str] = "ExpiryWindowEntered"
    severity: ClassVar[str] = "warning"
    window_days: int
    days_left: float
    not_after: str
    sha256: str

    def summary(self) -> str:
        return (
            f"{self.target} {self.endpoint}: certificate expires in {self.days_left:.1f} days "
            f"({self.not_after}), inside the {self.window_days}-day window"
        )


@dataclass(frozen=True, kw_only=True)
class ServedCertDiffers(EndpointEvent):
    """An endpoint serves another certificate than the one the box reports through its API:
    a certificate uploaded without a restart, another box behind the port, or someone
    intercepting it. Never a reason to renew (renewers/manager.py)."""

    type: ClassVar[str] = "ServedCertDiffers"
    severity: ClassVar[str] = "critical"
    served_sha256: str
    installed_sha256: str
    served_verified: bool
    served_issuer: str
    served_not_after: str

    def summary(self) -> str:
        trust = "verifies" if self.served_verified else "does NOT verify"
        return (
            f"{self.target} {self.endpoint}: serves {self.served_sha256} (issuer "
            f"{self.served_issuer}, {trust} against the trust bundle), but the box reports "
            f"{self.installed_sha256} installed; a pending restart, another box behind this "
            "port, or interception; no renewal is started because of it"
        )


@dataclass(frozen=True, kw_only=True)
class RenewalDue(Event):
    """The renewal policy says this target's certificate must be renewed."""

    type: ClassVar[str] = "RenewalDue"
    reason: str
    message: str

    def summary(self) -> str:
        return f"{self.target}: renewal due ({self.reason}): {self.message}"


@dataclass(frozen=True, kw_only=True)
class StageEvent(Event):
    """Base of the renewal pipeline's stage events; `stage` is a pipeline stage name."""

    stage: str


@dataclass(frozen=True, kw_only=True)
class StageStarted(StageEvent):
    type: ClassVar[str] = "StageStarted"

    def summary(self) -> str:
        return f"{self.target}: renewal {self.renewal_id} stage {self.stage} started"


@dataclass(frozen=True, kw_only=True)
class StageSucceeded(StageEvent):
    type: ClassVar[str] = "StageSucceeded"
    detail: str = ""

    def summary(self) -> str:
        extra = f": {self.detail}" if self.detail else ""
        return f"{self.target}: renewal {self.renewal_id} stage {self.stage} done{extra}"


@dataclass(frozen=True, kw_only=True)
class StageWaiting(StageEvent):
    type: ClassVar[str] = "StageWaiting"
    until: str  # ISO 8601 UTC
    why: str

    def summary(self) -> str:
        return f"{self.target}: renewal {self.renewal_id} {self.stage} waits until {self.until}: {self.why}"


@dataclass(frozen=True, kw_only=True)
class StageFailed(StageEvent):
    type: ClassVar[str] = "StageFailed"
    severity: ClassVar[str] = "critical"
    why: str
    retry_at: str | None = None  # ISO 8601 UTC; None when an operator must act
    # Why, as a code (renewers/pipeline/outcomes.py `OutcomeReason`, docs/renewal.md
    # "Outcomes"); "" in events recorded before codes existed.
    reason: str = ""

    def summary(self) -> str:
        retry = f"; retry at {self.retry_at}" if self.retry_at else ""
        return (
            f"{self.target}: renewal {self.renewal_id} stage {self.stage} failed: {self.why}{retry}"
        )


@dataclass(frozen=True, kw_only=True)
class RenewalBlocked(StageEvent):
    type: ClassVar[str] = "RenewalBlocked"
    severity: ClassVar[str] = "critical"
    why: str
    reason: str = ""  # as in StageFailed

    def summary(self) -> str:
        return f"{self.target}: renewal {self.renewal_id} blocked at {self.stage}: {self.why}"


@dataclass(frozen=True, kw_only=True)
class ApprovalRequired(StageEvent):
    type: ClassVar[str] = "ApprovalRequired"
    severity: ClassVar[str] = "warning"
    why: str
    # When the CA changes: SHA-256 of each CA certificate that goes to the trust stores.
    new_ca_sha256: tuple[str, ...] = ()

    def summary(self) -> str:
        cas = f"; new CA SHA-256 {', '.join(self.new_ca_sha256)}" if self.new_ca_sha256 else ""
        return (
            f"{self.target}: renewal {self.renewal_id} awaits approval ({self.why}{cas}); "
            f"run: expressway-certd approve {self.renewal_id}"
        )


@dataclass(frozen=True, kw_only=True)
class RenewalCancelled(Event):
    """An operator ended an active renewal; `renew --now` starts afresh."""

    type: ClassVar[str] = "RenewalCancelled"
    severity: ClassVar[str] = "warning"
    stage: str
    by: str

    def summary(self) -> str:
        return (
            f"{self.target}: renewal {self.renewal_id} cancelled at stage {self.stage} by {self.by}"
        )


@dataclass(frozen=True, kw_only=True)
class RenewalCompleted(Event):
    type: ClassVar[str] = "RenewalCompleted"
    new_sha256: str
    not_after: str
    cert_kind: str = "server"  # "client": the X15.5 client certificate was renewed

    def summary(self) -> str:
        what = "client certificate installed" if self.cert_kind == "client" else "serving"
        return (
            f"{self.target}: renewal {self.renewal_id} complete; {what} {self.new_sha256[:16]} "
            f"until {self.not_after}"
        )


@dataclass(frozen=True, kw_only=True)
class AcmeAccountRecreated(Event):
    """An ACME CA forgot or deactivated the daemon's account; a new one was registered.

    `target` is `ca:NAME` (the account belongs to a CA, not to an Expressway). A warning: the
    account URL changed, so CAA `accounturi` pins and CA-side allow-lists need the new one.
    """

    type: ClassVar[str] = "AcmeAccountRecreated"
    severity: ClassVar[str] = "warning"
    ca: str
    directory: str
    cause: str  # "accountDoesNotExist", "deactivated", "revoked" or "unauthorized"
    old_account: str
    new_account: str
    new_key: bool
    order: str  # what happened to the order in progress: "re-created" or "none"

    def summary(self) -> str:
        key = "a new account key" if self.new_key else "the same account key"
        return (
            f"ACME CA {self.ca!r} no longer knew account {self.old_account} ({self.cause}); "
            f"registered {self.new_account} with {key}; order in progress: {self.order}. "
            "Update CAA accounturi records that pin the old account"
        )


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (ProbeFailed, ProbeRecovered, CertChanged, SANsChanged, IssuerChanged,
                ExpiryWindowEntered, ServedCertDiffers, RenewalDue, StageStarted, StageSucceeded,
                StageWaiting, StageFailed, RenewalBlocked, ApprovalRequired, RenewalCancelled,
                RenewalCompleted, AcmeAccountRecreated)
}  # fmt: skip

Subscriber = Callable[[Event], Awaitable[None]]


class EventBus:
    """Delivers each published event to every subscriber, in subscription order."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    async def publish(self, event: Event) -> None:
        for subscriber in self._subscribers:
            try:
                await subscriber(event)
            except Exception:  # one broken notifier must not stop the rest
                log.exception("event subscriber failed", event_type=event.type, target=event.target)
