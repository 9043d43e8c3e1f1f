"""Renewal policy: should this target's certificate be renewed now, and if not, when?

Like cert-manager's trigger policies: a list of small pure checks over one input, evaluated in
order; the first that fires gives the reason. Time comes from the input, never from a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from expressway_certd.monitor.durations import Fraction
from expressway_certd.monitor.facts import CertFacts

# Restarts wait for a maintenance window: never plan to renew later than this before expiry.
MIN_RENEW_BEFORE = timedelta(days=14)
DEFAULT_RENEW_BEFORE = Fraction(1, 3)


@dataclass(frozen=True)
class ServedCert:
    """One endpoint's served leaf as the monitor saw it; `verified`: the served chain built to
    an anchor of the trust bundle. Served certificates are network input: anyone who can
    answer on the port can serve one. They never decide a renewal by themselves."""

    endpoint: str  # "host:port"
    service: str
    facts: CertFacts
    verified: bool


@dataclass(frozen=True)
class Drift:
    """An endpoint serving another certificate than the box reports through its API."""

    served_sha256: str
    installed_sha256: str
    served_verified: bool


class Reason(StrEnum):
    MANUAL = "ManualRequest"
    NO_CERTIFICATE = "NoCertificate"
    EXPIRED = "Expired"
    SERVED_DIFFERS = "ServedDiffersFromInstalled"
    ARI_WINDOW = "ARIWindow"
    RENEW_BEFORE = "InsideRenewBefore"
    NOT_DUE = "NotDue"


@dataclass(frozen=True)
class PolicyInput:
    now: datetime
    # The current certificate as the box reports it through its API (not what a port serves:
    # see renewers/manager.py for how a served certificate may stand in for it).
    served: CertFacts | None
    renew_before: timedelta | Fraction = DEFAULT_RENEW_BEFORE
    installed_sha256: str | None = None  # what this tool last installed, if anything
    ari_window: tuple[datetime, datetime] | None = None  # (start, end) from ACME renewalInfo
    jitter: float = 0.0  # stored once per certificate, 0..1: how far into a window to go
    manual_request: bool = False


@dataclass(frozen=True)
class Decision:
    due: bool
    reason: Reason
    message: str
    renew_at: datetime | None = None  # when it becomes due (None: now or never computable)


Check = Callable[[PolicyInput], Decision | None]


def renew_before_of(facts: CertFacts, renew_before: timedelta | Fraction) -> timedelta:
    """Effective lead time before expiry, at least MIN_RENEW_BEFORE and at most the lifetime."""
    lifetime = timedelta(seconds=facts.lifetime_seconds())
    lead = lifetime * renew_before.value if isinstance(renew_before, Fraction) else renew_before
    return min(max(lead, MIN_RENEW_BEFORE), lifetime)


def renew_at(inp: PolicyInput) -> datetime | None:
    """When renewal falls due by renew_before (jitter moves it earlier, never later)."""
    if inp.served is None:
        return None
    lead = renew_before_of(inp.served, inp.renew_before)
    return inp.served.not_after - lead - lead * 0.1 * inp.jitter


def manual(inp: PolicyInput) -> Decision | None:
    if inp.manual_request:
        return Decision(True, Reason.MANUAL, "renewal requested by an operator")
    return None


def no_certificate(inp: PolicyInput) -> Decision | None:
    if inp.served is None:
        return Decision(True, Reason.NO_CERTIFICATE, "no server certificate could be read")
    return None


def expired(inp: PolicyInput) -> Decision | None:
    if inp.served is not None and inp.served.not_after <= inp.now:
        return Decision(
            True,
            Reason.EXPIRED,
            f"certificate expired at {inp.served.not_after:%Y-%m-%d %H:%M} UTC",
        )
    return None


def served_differs(inp: PolicyInput) -> Decision | None:
    if (
        inp.served is not None
        and inp.installed_sha256
        and inp.served.sha256 != inp.installed_sha256
    ):
        return Decision(
            True,
            Reason.SERVED_DIFFERS,
            f"the box reports {inp.served.sha256[:16]}, not the certificate this tool installed "
            f"({inp.installed_sha256[:16]}); someone replaced it or a restart is pending",
        )
    return None


def ari_window(inp: PolicyInput) -> Decision | None:
    if inp.ari_window is None:
        return None
    start, end = inp.ari_window
    when = start + (end - start) * inp.jitter
    if inp.now >= when:
        return Decision(
            True, Reason.ARI_WINDOW, f"the CA's renewal window opened at {start:%Y-%m-%d}"
        )
    return Decision(False, Reason.NOT_DUE, f"the CA suggests renewing from {when:%Y-%m-%d}", when)


def inside_renew_before(inp: PolicyInput) -> Decision | None:
    when = renew_at(inp)
    if when is None:
        return None
    if inp.now >= when:
        assert inp.served is not None
        days = inp.served.days_left(inp.now)
        return Decision(
            True, Reason.RENEW_BEFORE, f"{days:.1f} days left, inside renew_before", when
        )
    return Decision(False, Reason.NOT_DUE, f"renewal due from {when:%Y-%m-%d %H:%M} UTC", when)


DEFAULT_CHECKS: Sequence[Check] = (
    manual,
    no_certificate,
    expired,
    served_differs,
    ari_window,
    inside_renew_before,
)


def evaluate(inp: PolicyInput, checks: Sequence[Check] = DEFAULT_CHECKS) -> Decision:
    """The first check that answers decides."""
    for check in checks:
        decision = check(inp)
        if decision is not None:
            return decision
    return Decision(False, Reason.NOT_DUE, "nothing calls for a renewal")
