"""Routes bus events to notifiers: selection, dedup/throttle, resolution of earlier problems,
and delivery with a timeout and bounded retries, one ordered queue per notifier.

A notifier never raises into the bus: failures are logged and counted in
`expressway_notifications_total{notifier,kind,result}`.

CertdError
 +-- NotifyError      a notifier could not deliver (names the notifier; `retryable` says
                      whether trying again may help: network errors, 5xx, 429)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter

from expressway_certd.monitor.config_notify import Routing
from expressway_certd.monitor.durations import utcnow
from expressway_certd.monitor.errors import CertdError
from expressway_certd.monitor.events import EVENT_TYPES, Event

log = structlog.get_logger("alerts.notify")

# Events that end a problem reported earlier, and what they end.
RECOVERY_TYPES = frozenset({"ProbeRecovered", "StageSucceeded", "RenewalCompleted"})
STAGE_PROBLEMS = ("StageFailed", "RenewalBlocked", "ApprovalRequired")
RENEWAL_PROBLEMS = frozenset({*STAGE_PROBLEMS, "ExpiryWindowEntered", "RenewalDue"})
RESOLVABLE = frozenset({"ProbeFailed", *RENEWAL_PROBLEMS})

RESULTS = ("sent", "failed", "throttled", "dropped")


class NotifyError(CertdError):
    """A notifier could not deliver a notice."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class AlertKey:
    """Identity of one problem: what dedup, throttling and resolution compare."""

    type: str
    severity: str
    target: str
    endpoint: str | None = None
    service: str | None = None
    stage: str | None = None
    renewal_id: str | None = None

    @classmethod
    def of(cls, event: Event) -> AlertKey:
        return cls(
            type=event.type,
            severity=event.severity,
            target=event.target,
            endpoint=getattr(event, "endpoint", None),
            service=getattr(event, "service", None) or None,
            stage=getattr(event, "stage", None),
            renewal_id=event.renewal_id,
        )

    def labels(self) -> dict[str, str]:
        """Alertmanager labels; equal keys give equal label sets, so a resolve matches."""
        out = {"alertname": f"Expressway{self.type}", "severity": self.severity}
        for name in ("target", "endpoint", "service", "stage", "renewal_id"):
            value = getattr(self, name)
            if value:
                out[name] = value
        return out

    def describe(self) -> str:
        where = self.endpoint or (f"stage {self.stage}" if self.stage else "")
        return f"{self.type} on {self.target}{' ' + where if where else ''}"


def direct_resolutions(event: Event) -> tuple[AlertKey, ...]:
    """The problem keys a recovery event ends by itself, without knowing what was reported."""
    if event.type == "ProbeRecovered":
        key = AlertKey.of(event)
        return (_key("ProbeFailed", key.target, endpoint=key.endpoint, service=key.service),)
    if event.type == "StageSucceeded":
        key = AlertKey.of(event)
        types = STAGE_PROBLEMS if key.stage == "approve" else STAGE_PROBLEMS[:2]
        return tuple(_key(t, key.target, stage=key.stage, renewal_id=key.renewal_id) for t in types)
    return ()


def _key(event_type: str, target: str, **where: str | None) -> AlertKey:
    return AlertKey(event_type, EVENT_TYPES[event_type].severity, target, **where)


def resolutions(
    event: Event, open_keys: Iterable[AlertKey], *, blind: bool
) -> tuple[AlertKey, ...]:
    """Problems `event` ends: the open ones it matches, plus (when `blind`) its direct ones.

    `blind` suits a receiver that resolves by identity (Alertmanager), where ending an alert
    that was never raised is harmless; message receivers only hear about what they were told.
    """
    if event.type not in RECOVERY_TYPES:
        return ()
    direct = direct_resolutions(event)
    out = list(direct) if blind else []
    for key in open_keys:
        if key in out:
            continue
        if key in direct or (
            event.type == "RenewalCompleted"
            and key.target == event.target
            and key.type in RENEWAL_PROBLEMS
            and not (key.type == "ExpiryWindowEntered" and _client_renewal(event))
        ):
            out.append(key)
    return tuple(out)


def _client_renewal(event: Event) -> bool:
    """A completed renewal of the X15.5 client certificate: the served (server) certificate
    whose expiry window was entered is not renewed by it."""
    return getattr(event, "cert_kind", "server") == "client"


@dataclass(frozen=True)
class Notice:
    """One thing to tell a notifier: an event, and the problems it resolves (if any)."""

    event: Event
    resolves: tuple[AlertKey, ...] = ()

    @property
    def key(self) -> AlertKey:
        return AlertKey.of(self.event)

    @property
    def status(self) -> str:
        """One of "resolved", "firing" (a warning or critical event) or "info"."""
        if self.resolves:
            return "resolved"
        return "info" if self.event.severity == "info" else "firing"

    def title(self) -> str:
        label = "RESOLVED" if self.resolves else self.event.severity.upper()
        return f"[{label}] {self.event.summary()}"

    def details(self) -> list[tuple[str, str]]:
        """(name, value) lines for message bodies: when, target, renewal, event fields."""
        e = self.event
        rows = [("event", e.type), ("severity", e.severity), ("target", e.target)]
        rows.append(("time", e.time.astimezone(UTC).isoformat()))
        if e.renewal_id:
            rows.append(("renewal", e.renewal_id))
        for name, value in e.payload().items():
            if value not in (None, "", []):
                rows.append(
                    (name, ", ".join(map(str, value)) if isinstance(value, list) else str(value))
                )
        rows.extend(("resolves", key.describe()) for key in self.resolves)
        return rows

    def text(self) -> str:
        return "\n".join([self.title(), "", *(f"{k}: {v}" for k, v in self.details())])


class Notifier(Protocol):
    """Delivers notices to one receiver.

    `send` raises NotifyError (retryable or not) and nothing else on purpose; the router
    applies the timeout. `blind_resolve` is True when resolving an unknown problem is harmless.
    """

    name: str
    kind: str
    routing: Routing
    blind_resolve: bool

    async def send(self, notice: Notice) -> None: ...

    async def aclose(self) -> None: ...


Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]


class _Lane:
    """One notifier's queue, worker and memory (what it was told, and when)."""

    def __init__(self, notifier: Notifier, size: int) -> None:
        self.notifier = notifier
        self.queue: asyncio.Queue[tuple[Notice, AlertKey | None]] = asyncio.Queue(size)
        self.worker: asyncio.Task[None] | None = None
        self.last_sent: dict[AlertKey, datetime] = {}
        self.open: set[AlertKey] = set()


class Router:
    """Subscribe `router.publish` to the EventBus; `await router.aclose()` on shutdown."""

    def __init__(
        self,
        notifiers: Sequence[Notifier],
        *,
        registry: CollectorRegistry | None = None,
        clock: Clock = utcnow,
        sleep: Sleep = asyncio.sleep,
        backoff: float = 1.0,
        queue_size: int = 1000,
    ) -> None:
        self._lanes = [_Lane(n, queue_size) for n in notifiers]
        self._clock = clock
        self._sleep = sleep
        self._backoff = backoff
        self._closed = False
        self.counter = Counter(
            "expressway_notifications",
            "Notices handled per notifier: sent, failed (after retries), throttled, dropped.",
            ["notifier", "kind", "result"],
            registry=registry,
        )
        for lane in self._lanes:  # every series exists from the start, at 0
            for result in RESULTS:
                self.counter.labels(lane.notifier.name, lane.notifier.kind, result)

    async def publish(self, event: Event) -> None:
        """EventBus subscriber: queue the event for every notifier that wants it; never raises."""
        if self._closed:
            return
        for lane in self._lanes:
            try:
                self._offer(lane, event)
            except Exception:
                log.exception(
                    "notifier routing failed", notifier=lane.notifier.name, event_type=event.type
                )

    def _count(self, lane: _Lane, result: str) -> None:
        self.counter.labels(lane.notifier.name, lane.notifier.kind, result).inc()

    def _offer(self, lane: _Lane, event: Event) -> None:
        n = lane.notifier
        routing = n.routing
        resolves = tuple(
            k
            for k in resolutions(event, lane.open, blind=n.blind_resolve)
            if k in lane.open or routing.selects(k.type, k.severity)
        )
        selected = routing.selects(event.type, event.severity)
        if n.blind_resolve and event.type in RECOVERY_TYPES:
            selected = False  # such a receiver only uses a recovery to end its alerts
        if not resolves and not selected:
            return
        now = self._clock()
        throttle_key: AlertKey | None = None
        if not resolves:
            throttle_key = AlertKey.of(event)
            last = lane.last_sent.get(throttle_key)
            if last is not None and now - last < routing.throttle:
                self._count(lane, "throttled")
                log.debug(
                    "notice throttled", notifier=n.name, event_type=event.type, target=event.target
                )
                return
        try:
            lane.queue.put_nowait((Notice(event, resolves), throttle_key))
        except asyncio.QueueFull:
            self._count(lane, "dropped")
            log.error(
                "notifier queue full; notice dropped",
                notifier=n.name,
                event_type=event.type,
                target=event.target,
                queued=lane.queue.qsize(),
            )
            return
        if throttle_key is not None:
            lane.last_sent[throttle_key] = now
            self._prune(lane, now)
            if event.type in RESOLVABLE:
                lane.open.add(throttle_key)
        for key in resolves:
            lane.open.discard(key)
            lane.last_sent.pop(key, None)  # a new occurrence after recovery is news again
        if lane.worker is None:
            lane.worker = asyncio.get_running_loop().create_task(
                self._work(lane), name=f"notifier {n.name}"
            )

    def _prune(self, lane: _Lane, now: datetime) -> None:
        if len(lane.last_sent) < 1024:
            return
        horizon = lane.notifier.routing.throttle
        for key, when in list(lane.last_sent.items()):
            if now - when >= horizon:
                del lane.last_sent[key]

    async def _work(self, lane: _Lane) -> None:
        while True:
            notice, throttle_key = await lane.queue.get()
            try:
                ok = await self._deliver(lane, notice)
            except Exception:  # keep the lane alive whatever happens to one notice
                log.exception("notice delivery crashed", notifier=lane.notifier.name)
                ok = False
            finally:
                lane.queue.task_done()
            if not ok and throttle_key is not None:
                lane.last_sent.pop(throttle_key, None)  # next occurrence tries again

    async def _deliver(self, lane: _Lane, notice: Notice) -> bool:
        n = lane.notifier
        routing = n.routing
        event = notice.event
        attempts = routing.retries + 1
        for attempt in range(1, attempts + 1):
            retryable = True
            try:
                await asyncio.wait_for(n.send(notice), routing.timeout.total_seconds())
            except TimeoutError:
                error = f"{n.name}: no answer within {routing.timeout.total_seconds():g}s"
            except NotifyError as exc:
                error, retryable = str(exc), exc.retryable
            except Exception as exc:  # a notifier bug must not stop its lane
                error = f"{n.name}: {type(exc).__name__}"
                log.exception("notifier crashed", notifier=n.name, event_type=event.type)
            else:
                self._count(lane, "sent")
                log.info(
                    "notice sent",
                    notifier=n.name,
                    kind=n.kind,
                    event_type=event.type,
                    target=event.target,
                    status=notice.status,
                )
                return True
            last = attempt == attempts or not retryable
            log.warning(
                "notice delivery failed" if last else "notice delivery failed; will retry",
                notifier=n.name,
                kind=n.kind,
                event_type=event.type,
                target=event.target,
                attempt=attempt,
                error=error,
            )
            if last:
                break
            await self._sleep(self._backoff * 2 ** (attempt - 1))
        self._count(lane, "failed")
        return False

    async def join(self) -> None:
        """Wait until every notice queued so far has been delivered or given up."""
        await asyncio.gather(*(lane.queue.join() for lane in self._lanes))

    async def aclose(self, drain_timeout: float = 5.0) -> None:
        """Stop taking events, give queued notices `drain_timeout` seconds, then cancel."""
        self._closed = True
        workers = [lane.worker for lane in self._lanes if lane.worker is not None]
        if workers:
            joins = [asyncio.ensure_future(lane.queue.join()) for lane in self._lanes]
            _, pending = await asyncio.wait(joins, timeout=drain_timeout)
            for task in [*pending, *workers]:
                task.cancel()
            await asyncio.gather(*pending, *workers, return_exceptions=True)
            left = sum(lane.queue.qsize() for lane in self._lanes)
            if left:
                log.warning("notices not delivered at shutdown", count=left)
        for lane in self._lanes:
            with contextlib.suppress(Exception):
                await lane.notifier.aclose()
