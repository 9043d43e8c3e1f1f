"""Router: selection, dedup/throttle on an injected clock, resolution, retries, isolation."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from expressway_certd.alerts.notifiers.alertmanager import AlertmanagerNotifier
from expressway_certd.alerts.notifiers.webex import MAX_MARKDOWN, markdown
from expressway_certd.alerts.notify import AlertKey, Notice, NotifyError, Router, resolutions
from expressway_certd.monitor.config_notify import AlertmanagerConfig, Routing
from expressway_certd.monitor.events import (
    ApprovalRequired,
    CertChanged,
    Event,
    EventBus,
    ExpiryWindowEntered,
    ProbeFailed,
    ProbeRecovered,
    RenewalCompleted,
    StageFailed,
    StageStarted,
    StageSucceeded,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@dataclass
class Recorder:
    """A notifier that records what it is sent; can fail, hang or be slow on demand."""

    name: str = "rec"
    routing: Routing = field(default_factory=Routing)
    blind_resolve: bool = False
    kind: str = "test"
    fail: int = 0  # fail this many sends first
    retryable: bool = True
    delay: float = 0.0
    crash: bool = False
    notices: list[Notice] = field(default_factory=list)
    attempts: int = 0
    closed: bool = False

    async def send(self, notice: Notice) -> None:
        self.attempts += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.crash:
            raise RuntimeError("bug in notifier")
        if self.fail:
            self.fail -= 1
            raise NotifyError(f"{self.name}: receiver said no", retryable=self.retryable)
        self.notices.append(notice)

    async def aclose(self) -> None:
        self.closed = True

    @property
    def types(self) -> list[tuple[str, str]]:
        return [(n.status, n.event.type) for n in self.notices]


def probe_failed(target: str = "expe1", endpoint: str = "expe1.example.com:7001") -> ProbeFailed:
    return ProbeFailed(
        target=target,
        time=T0,
        endpoint=endpoint,
        service="traversal",
        error_class="refused",
        error="connection refused",
    )


def probe_recovered(
    target: str = "expe1", endpoint: str = "expe1.example.com:7001"
) -> ProbeRecovered:
    return ProbeRecovered(
        target=target,
        time=T0,
        endpoint=endpoint,
        service="traversal",
        previous_error_class="refused",
    )


def stage_failed(stage: str = "submit", target: str = "expc1", rid: str = "r1") -> StageFailed:
    return StageFailed(target=target, time=T0, renewal_id=rid, stage=stage, why="CA said 503")


def stage_ok(stage: str = "submit", target: str = "expc1", rid: str = "r1") -> StageSucceeded:
    return StageSucceeded(target=target, time=T0, renewal_id=rid, stage=stage)


def cert_changed() -> CertChanged:
    return CertChanged(
        target="expe1",
        time=T0,
        endpoint="expe1.example.com:443",
        old_sha256="aa" * 32,
        new_sha256="bb" * 32,
        new_not_after="2027-01-01T00:00:00+00:00",
    )


def make_router(*notifiers: Recorder, clock: FakeClock | None = None, **kw: object) -> Router:
    return Router(
        list(notifiers),
        registry=CollectorRegistry(),
        clock=clock or FakeClock(),
        backoff=0,
        **kw,  # type: ignore[arg-type]
    )


def count(router: Router, name: str, result: str) -> float:
    return router.counter.labels(name, "test", result)._value.get()


async def run(router: Router, *events: Event) -> None:
    for event in events:
        await router.publish(event)
    await router.join()


async def test_default_routing_sends_warning_and_critical_only():
    rec = Recorder()
    router = make_router(rec)
    await run(router, cert_changed(), probe_failed(), stage_failed())
    assert rec.types == [("firing", "ProbeFailed"), ("firing", "StageFailed")]
    await router.aclose()
    assert rec.closed


@pytest.mark.parametrize(
    ("routing", "expected"),
    [
        (Routing(events=None), ["CertChanged", "ProbeFailed", "StageFailed"]),
        (Routing(events=None, min_severity="critical"), ["StageFailed"]),
        (Routing(events=frozenset({"CertChanged"})), ["CertChanged"]),
        (
            Routing(events=frozenset({"CertChanged", "ProbeFailed"}), min_severity="warning"),
            ["ProbeFailed"],
        ),
    ],
    ids=["all", "critical-only", "listed", "listed-and-severity"],
)
async def test_selection(routing, expected):
    rec = Recorder(routing=routing)
    router = make_router(rec)
    await run(router, cert_changed(), probe_failed(), stage_failed())
    assert [t for _, t in rec.types] == expected
    await router.aclose()


async def test_throttle_per_key_on_injected_clock():
    clock = FakeClock()
    rec = Recorder(routing=Routing(throttle=timedelta(hours=1)))
    router = make_router(rec, clock=clock)
    await run(router, probe_failed(), probe_failed())  # duplicate: suppressed
    await run(router, probe_failed(endpoint="expe1.example.com:8443"))  # other key
    clock.advance(minutes=59)
    await run(router, probe_failed())
    assert len(rec.notices) == 2
    assert count(router, "rec", "throttled") == 2
    clock.advance(minutes=1)
    await run(router, probe_failed())
    assert len(rec.notices) == 3
    assert count(router, "rec", "sent") == 3
    await router.aclose()


async def test_recovery_resolves_what_was_sent_and_rearms_throttle():
    rec = Recorder()
    router = make_router(rec)
    await run(router, probe_failed(), probe_recovered())
    assert rec.types == [("firing", "ProbeFailed"), ("resolved", "ProbeRecovered")]
    assert rec.notices[1].resolves == (AlertKey.of(probe_failed()),)
    # failing again right after a recovery is news, whatever the throttle says
    await run(router, probe_failed())
    assert rec.types[-1] == ("firing", "ProbeFailed")
    await router.aclose()


async def test_message_receivers_only_hear_recoveries_of_what_they_were_told():
    rec = Recorder()
    router = make_router(rec)
    await run(router, probe_recovered(), stage_ok("csr"))
    assert rec.notices == []
    await router.aclose()


async def test_blind_receiver_resolves_direct_counterparts_without_memory():
    am = Recorder(name="am", blind_resolve=True, routing=Routing(events=None))
    router = make_router(am)
    await run(router, probe_recovered(), stage_ok("submit"), stage_ok("approve"))
    assert [n.status for n in am.notices] == ["resolved"] * 3
    assert [k.type for k in am.notices[0].resolves] == ["ProbeFailed"]
    assert [k.type for k in am.notices[1].resolves] == ["StageFailed", "RenewalBlocked"]
    assert "ApprovalRequired" in [k.type for k in am.notices[2].resolves]
    # a recovery only ends alerts: no alert of its own, even when every event is selected
    assert all(n.resolves for n in am.notices)
    await router.aclose()


async def test_renewal_completed_ends_every_open_renewal_problem_of_its_target():
    rec = Recorder()
    router = make_router(rec)
    approval = ApprovalRequired(
        target="expc1", time=T0, renewal_id="r1", stage="approve", why="CA changed"
    )
    window = ExpiryWindowEntered(
        target="expc1",
        time=T0,
        endpoint="expc1.example.com:443",
        window_days=30,
        days_left=20.0,
        not_after="2026-11-21T00:00:00+00:00",
        sha256="cc" * 32,
    )
    other = stage_failed(target="expc2", rid="r2")
    done = RenewalCompleted(
        target="expc1", time=T0, renewal_id="r1", new_sha256="dd" * 32, not_after="2027-02-01"
    )
    await run(router, stage_failed(), approval, window, other, probe_failed("expc1"), done)
    resolved = rec.notices[-1]
    assert resolved.status == "resolved"
    assert {k.type for k in resolved.resolves} == {
        "StageFailed",
        "ApprovalRequired",
        "ExpiryWindowEntered",
    }
    assert all(k.target == "expc1" for k in resolved.resolves)
    await router.aclose()


def test_a_client_certificate_renewal_leaves_the_served_certificate_expiry_open():
    window = ExpiryWindowEntered(
        target="expc1", time=T0, endpoint="expc1.example.com:443", window_days=30,
        days_left=20.0, not_after="2026-11-21T00:00:00+00:00", sha256="cc" * 32,
    )  # fmt: skip
    failed = stage_failed(target="expc1")
    keys = [AlertKey.of(window), AlertKey.of(failed)]
    client = RenewalCompleted(
        target="expc1", time=T0, renewal_id="r1", new_sha256="dd" * 32,
        not_after="2027-02-01", cert_kind="client",
    )  # fmt: skip
    assert resolutions(client, keys, blind=False) == (AlertKey.of(failed),)
    server = dataclasses.replace(client, cert_kind="server")
    assert resolutions(server, keys, blind=False) == tuple(keys)


def test_resolutions_table():
    key = AlertKey.of(stage_failed("install"))
    assert resolutions(stage_ok("install"), [key], blind=False) == (key,)
    assert resolutions(stage_ok("csr"), [key], blind=False) == ()
    assert resolutions(stage_ok("install", rid="r9"), [key], blind=False) == ()
    assert resolutions(stage_failed(), [key], blind=True) == ()
    assert AlertKey.of(probe_failed()).labels() == {
        "alertname": "ExpresswayProbeFailed",
        "severity": "warning",
        "target": "expe1",
        "endpoint": "expe1.example.com:7001",
        "service": "traversal",
    }


async def test_retries_then_success():
    rec = Recorder(fail=2, routing=Routing(retries=3))
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    router = Router([rec], registry=CollectorRegistry(), sleep=sleep, backoff=1.0)
    await run(router, probe_failed())
    assert rec.attempts == 3 and len(rec.notices) == 1
    assert sleeps == [1.0, 2.0]
    assert count(router, "rec", "sent") == 1 and count(router, "rec", "failed") == 0
    await router.aclose()


async def test_permanent_error_is_not_retried_and_failure_rearms_throttle():
    rec = Recorder(fail=1, retryable=False, routing=Routing(retries=5))
    router = make_router(rec)
    with capture_logs() as logs:
        await run(router, probe_failed())
    assert rec.attempts == 1 and rec.notices == []
    assert count(router, "rec", "failed") == 1
    failed = [e for e in logs if e["event"] == "notice delivery failed"]
    assert failed and failed[0]["notifier"] == "rec" and "receiver said no" in failed[0]["error"]
    await run(router, probe_failed())  # within the throttle window, but the first never arrived
    assert len(rec.notices) == 1
    await router.aclose()


async def test_bugs_and_timeouts_are_contained():
    buggy = Recorder(name="buggy", crash=True, routing=Routing(retries=0))
    hanging = Recorder(
        name="hanging", delay=30, routing=Routing(retries=1, timeout=timedelta(seconds=0.05))
    )
    bus = EventBus()
    router = make_router(buggy, hanging)
    bus.subscribe(router.publish)
    with capture_logs() as logs:
        await bus.publish(probe_failed())
        await router.join()
    assert count(router, "buggy", "failed") == 1
    assert count(router, "hanging", "failed") == 1 and hanging.attempts == 2
    assert not [e for e in logs if e["event"] == "event subscriber failed"]
    await router.aclose()


async def test_slow_notifier_does_not_delay_the_others():
    slow = Recorder(name="slow", delay=5, routing=Routing(timeout=timedelta(seconds=30)))
    fast = Recorder(name="fast")
    bus = EventBus()
    router = make_router(slow, fast)
    bus.subscribe(router.publish)
    started = time.monotonic()
    await bus.publish(probe_failed())
    await bus.publish(stage_failed())
    assert time.monotonic() - started < 0.5  # publishing never waits for a delivery
    for _ in range(100):
        if len(fast.notices) == 2:
            break
        await asyncio.sleep(0.01)
    assert fast.types == [("firing", "ProbeFailed"), ("firing", "StageFailed")]
    assert slow.notices == []
    started = time.monotonic()
    await router.aclose(drain_timeout=0.2)  # cancels what cannot finish
    assert time.monotonic() - started < 1.0
    assert slow.closed and fast.closed
    await bus.publish(probe_failed("other"))  # after close: ignored, no error
    assert len(fast.notices) == 2


async def test_one_notifier_keeps_event_order():
    rec = Recorder(delay=0.01, routing=Routing(events=None))
    router = make_router(rec)
    events = [
        probe_failed(),
        probe_recovered(),
        StageStarted(target="expc1", time=T0, renewal_id="r1", stage="csr"),
    ]
    await run(router, *events)
    assert [n.event.type for n in rec.notices] == [e.type for e in events]
    await router.aclose()


async def test_full_queue_drops_and_counts():
    rec = Recorder(delay=1, routing=Routing(events=None, throttle=timedelta(seconds=1)))
    router = make_router(rec, queue_size=1)
    with capture_logs() as logs:
        for i in range(4):
            await router.publish(probe_failed(endpoint=f"h:{7000 + i}"))
        await asyncio.sleep(0)
    assert count(router, "rec", "dropped") >= 2
    assert any(e["event"] == "notifier queue full; notice dropped" for e in logs)
    await router.aclose(drain_timeout=0)


async def test_counter_is_on_the_given_registry_only():
    registry = CollectorRegistry()
    rec = Recorder()
    router = Router([rec], registry=registry)
    await run(router, probe_failed())
    labels = {"notifier": "rec", "kind": "test", "result": "sent"}
    assert registry.get_sample_value("expressway_notifications_total", labels) == 1
    assert (
        registry.get_sample_value("expressway_notifications_total", {**labels, "result": "failed"})
        == 0
    )
    Router([Recorder()], registry=CollectorRegistry())  # a second router: no clash
    await router.aclose()


def test_webex_markdown_stays_under_the_api_limit():
    long = StageFailed(target="expc1", time=T0, renewal_id="r1", stage="csr", why="é" * 9000)
    text = markdown(Notice(long))
    assert len(text.encode()) <= MAX_MARKDOWN
    assert text.startswith("\N{POLICE CARS REVOLVING LIGHT} **[CRITICAL] expc1: renewal r1")


def test_alertmanager_alert_shapes():
    config = AlertmanagerConfig(name="am", url="http://am:9093", resolve_timeout=timedelta(hours=2))
    am = AlertmanagerNotifier(config)
    local = datetime(2026, 11, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    event = StageFailed(target="expc1", time=local, renewal_id="r1", stage="csr", why="x")
    (firing,) = am.alerts(Notice(event))
    assert (firing["startsAt"], firing["endsAt"]) == (
        "2026-11-01T12:00:00Z",
        "2026-11-01T14:00:00Z",
    )
    assert firing["labels"]["alertname"] == "ExpresswayStageFailed"
    ok = stage_ok("csr", rid="r1")
    resolved = am.alerts(Notice(ok, (AlertKey.of(event),)))
    assert resolved == [
        {
            "labels": AlertKey.of(event).labels(),
            "annotations": {"summary": f"resolved: {ok.summary()}"},
            "endsAt": "2026-11-01T12:00:00Z",
        }
    ]
