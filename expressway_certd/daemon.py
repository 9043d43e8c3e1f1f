"""The daemon: wires config, store, prober, monitor, scheduler, metrics and HTTP, once.

Runs until SIGTERM/SIGINT sets the stop event (no polling sleeps); on the way out it stops the
scheduler, cancels in-flight polls, closes the HTTP server and the store, in that order.
SIGHUP re-reads the config file and applies its [[expressway]] targets (added, removed,
changed); a config that does not load, or that needs a restart to apply, keeps the running one
and the log says why. Under systemd (Type=notify) it reports READY/RELOADING/STOPPING and pings
the watchdog from the event loop (monitor/sdnotify.py).

On PostgreSQL the daemon is a replica (monitor/replicas.py): it registers, heartbeats, and after
each heartbeat recomputes the targets it owns from the live replicas; it schedules polls and
exports series only for those, and takes over a dead replica's targets at its next heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import signal
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO

import structlog
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CollectorRegistry, gc_collector, platform_collector, process_collector

from expressway_certd.alerts.metrics import (
    RENEWAL_STAGE_DURATION,
    RENEWAL_STAGE_TOTAL,
    BacklogCollector,
    RenewalCollector,
    ReplicaView,
    StateExposition,
    observe_stage,
)
from expressway_certd.config import load_config
from expressway_certd.http import build_app
from expressway_certd.monitor import __version__
from expressway_certd.monitor.config import Config, ExpresswayConfig, sqlite_path
from expressway_certd.monitor.errors import CertdError, ConfigError
from expressway_certd.monitor.events import Event, EventBus
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.monitor.replicas import (
    Ownership,
    Registry,
    Replica,
    heartbeat_interval,
    heartbeat_timeout,
    hold_sqlite_state,
    new_replica_id,
)
from expressway_certd.monitor.sdnotify import SystemdNotifier, cancel
from expressway_certd.monitor.store import Store
from expressway_certd.monitor.watch import Monitor
from expressway_certd.renewers.clientcert import ClientCertWatch

if TYPE_CHECKING:
    from expressway_certd.alerts.notify import Router
    from expressway_certd.renewers.manager import RenewalManager
    from expressway_certd.trustmap_live import TrustMapper, TrustMapResult

log = structlog.get_logger("expressway_certd.daemon")


def _drop_cancellations(record: logging.LogRecord) -> bool:
    """A logging filter: False for a record about a job cancelled at shutdown."""
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, asyncio.CancelledError)


class Daemon:
    """One running expressway-certd service."""

    def __init__(self, config: Config, *, renewal_options: dict[str, Any] | None = None) -> None:
        self.config = config
        self.bus = EventBus()
        self.store: Store | None = None
        self.monitor: Monitor | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self._runner: web.AppRunner | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self.http_port: int | None = None
        self.renewals: RenewalManager | None = None
        self.notifications: Router | None = None
        self._renewal_options: dict[str, Any] = dict(renewal_options or {})
        # Bounds how many targets are polled at once (their probes share `concurrency` slots):
        # thousands of polls starting together cost memory that the heap never gives back.
        self._poll_slots = asyncio.Semaphore(max(1, config.daemon.concurrency // 4))
        self.exposition: StateExposition | None = None
        self.replicas: Registry | None = None  # set on PostgreSQL: this daemon is a replica
        self._state_lock: BinaryIO | None = None  # on SQLite: this is the file's one daemon
        self.ownership: Ownership | None = None
        self.trust_map: TrustMapper | None = None  # set when an Expressway has API credentials
        self.client_certs = ClientCertWatch(concurrency=max(1, config.daemon.concurrency // 4))

    def owns(self, target: str) -> bool:
        """Whether this daemon polls and exports `target` (always, when it is not a replica)."""
        return self.ownership is None or self.ownership.owns(target)

    def owned_targets(self) -> list[ExpresswayConfig]:
        return [e for e in self.config.expressways if self.owns(e.name)]

    def _replica_view(self) -> ReplicaView | None:
        if self.ownership is None:
            return None
        return ReplicaView(owned=len(self.ownership.owned), live=len(self.ownership.live))

    async def _start_replica(self) -> None:
        assert self.store is not None
        if self.store.engine.dialect.name != "postgresql":
            return  # SQLite: one machine, one daemon, every target
        me_id = new_replica_id()
        host, pid, _ = me_id.split(":")
        timeout = heartbeat_timeout(self.config.daemon.poll_interval)
        self.replicas = Registry(
            self.store, Replica(me_id, host, int(pid), __version__), timeout=timeout
        )
        await self.replicas.register()
        self.ownership = Ownership(me_id)
        self.ownership.update(await self.replicas.live(), (e.name for e in self.config.expressways))
        log.info(
            "replica registered",
            replica=me_id,
            live=list(self.ownership.live),
            owned_targets=len(self.ownership.owned),
        )

    async def _replica_tick(self) -> None:
        """Heartbeat, then adopt the split of the live replicas: poll gained targets now (after
        re-reading their state from the store), stop polling lost ones."""
        if self.replicas is None or self.ownership is None:
            return
        try:
            await self.replicas.heartbeat()
            live = await self.replicas.live()
        except CertdError as exc:
            log.error("replica heartbeat failed; keeping the targets owned", error=str(exc))
            return
        await self._adopt(live)

    async def _adopt(self, live: list[str]) -> None:
        assert self.ownership is not None and self.monitor is not None
        change = self.ownership.update(live, (e.name for e in self.config.expressways))
        if not (change.gained or change.lost):
            return
        log.info(
            "replica ownership changed",
            replica=self.ownership.me,
            live=list(self.ownership.live),
            gained=len(change.gained),
            lost=len(change.lost),
            owned_targets=len(self.ownership.owned),
        )
        if self.scheduler is None:
            return
        jobs = {j.id for j in self.scheduler.get_jobs()}
        for name in change.lost:
            if f"poll:{name}" in jobs:
                self.scheduler.remove_job(f"poll:{name}")
        if change.gained:
            await self.monitor.refresh(change.gained)
            now = datetime.now(UTC)
            for exp in self.config.expressways:
                if exp.name in change.gained:
                    self._add_poll_job(self.scheduler, exp, now)

    async def start(self) -> None:
        cfg = self.config
        d = cfg.daemon
        state_file = sqlite_path(d.state)
        if state_file is not None:  # before migrating: a second daemon touches nothing
            self._state_lock = hold_sqlite_state(state_file)
        self.store = await Store.open(d.state, history=d.history)
        await self._start_replica()
        self.bus.subscribe(self._audit)
        if cfg.notifiers:
            from expressway_certd.alerts.notifiers import build_router  # noqa: PLC0415 - optional: smtplib, only when configured

            self.notifications = build_router(cfg.notifiers, registry=self.registry)
            self.bus.subscribe(self.notifications.publish)
        trust = TrustStore([d.trust_bundle] if d.trust_bundle else [], system_roots=d.system_roots)
        prober = Prober(trust, concurrency=d.concurrency, timeout=d.probe_timeout.total_seconds())
        self.monitor = Monitor(cfg, prober, self.store, self.bus)
        await self.monitor.load()
        monitor = self.monitor
        self.exposition = StateExposition(
            lambda: monitor.states,
            self.owned_targets,
            __version__,
            replica=self._replica_view,
            client_certs=lambda: self.client_certs.states,
        )
        if any(e.renewal is not None for e in cfg.expressways):
            await self._start_renewals(prober)
        if any(e.username and e.password for e in cfg.expressways):
            self._start_trust_map(prober)
        process_collector.ProcessCollector(registry=self.registry)
        platform_collector.PlatformCollector(registry=self.registry)
        gc_collector.GCCollector(registry=self.registry)
        await self._start_http()
        self._start_scheduler()
        log.info(
            "expressway-certd started",
            version=__version__,
            targets=len(cfg.expressways),
            endpoints=sum(len(e.endpoints) for e in cfg.expressways),
            listen=f"{d.listen_host}:{self.http_port}",
            state=self.store.url,
            **_schema_fields(self.store),
        )

    async def _start_renewals(self, prober: Prober) -> None:
        # Loaded only by daemons that renew: renewers pulls in asyncssh, gssapi and the CA stacks.
        from expressway_certd.renewers.ca.metrics import CA_ERRORS, CA_REQUEST_DURATION  # noqa: PLC0415 - heavy, optional
        from expressway_certd.renewers.manager import RenewalManager  # noqa: PLC0415 - heavy, optional

        assert self.store is not None and self.monitor is not None
        manager = RenewalManager(
            self.config,
            self.store,
            self.bus,
            prober,
            observe=observe_stage,
            owns=self.owns,
            **self._renewal_options,
        )
        await manager.load()
        self.renewals = manager
        self.monitor.on_polled.append(manager.after_poll)
        for metric in (RENEWAL_STAGE_TOTAL, RENEWAL_STAGE_DURATION, CA_REQUEST_DURATION, CA_ERRORS):
            self.registry.register(metric)
        self.registry.register(
            RenewalCollector(
                self.owned_targets,
                manager.latest,
                lambda: manager.next_due,
                lambda: manager.last_success,
                lambda: manager.drift,
            )
        )
        self.registry.register(BacklogCollector(lambda: manager.backlog))

    def _start_trust_map(self, prober: Prober) -> None:
        from expressway_certd.renewers.pipeline import ConfiguredDevices  # noqa: PLC0415 - only with a trust map
        from expressway_certd.trustmap_live import TrustMapper  # noqa: PLC0415 - when needed

        assert self.store is not None and self.monitor is not None
        monitor = self.monitor
        seconds = trust_map_party_seconds(self.config.daemon.trust_map_interval)
        self.trust_map = TrustMapper(
            lambda: self.config,
            ConfiguredDevices({"timeout": seconds}),
            self.store,
            lambda: list(monitor.states.values()),
            timeout=seconds,
            probe=prober.probe,
            client_certs=lambda: self.client_certs.states,
            # as many Expressways at once as polls and client certificate reads
            concurrency=max(1, self.config.daemon.concurrency // 4),
        )

    async def _run_trust_map(self) -> None:
        assert self.trust_map is not None
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            await self.trust_map.refresh()
        except asyncio.CancelledError:
            return  # shutting down
        except Exception:
            log.exception("trust map computation crashed; the previous map is kept")
        finally:
            if task is not None:
                self._inflight.discard(task)

    def _start_scheduler(self) -> None:
        d = self.config.daemon
        interval = d.poll_interval.total_seconds()
        scheduler = AsyncIOScheduler(timezone=UTC)
        now = datetime.now(UTC)
        first_spread = min(interval * max(d.jitter, 0.01), 5.0)
        rng = random.Random()
        for exp in self.owned_targets():
            self._add_poll_job(
                scheduler, exp, now + timedelta(seconds=rng.uniform(0, first_spread))
            )
        if self.replicas is not None:
            beat = heartbeat_interval(d.poll_interval).total_seconds()
            scheduler.add_job(
                self._replica_tick,
                IntervalTrigger(seconds=beat, timezone=UTC),
                id="replica-heartbeat",
                next_run_time=now + timedelta(seconds=beat),
                max_instances=1,
                coalesce=True,
            )
        scheduler.add_job(
            self._prune_audit, IntervalTrigger(hours=24, timezone=UTC), id="prune-audit"
        )
        # always scheduled: a reload may add targets with credentials; none readable: no-op
        scheduler.add_job(
            self._read_client_certs,
            IntervalTrigger(seconds=d.client_cert_check.total_seconds(), timezone=UTC),
            id="client-certs",
            next_run_time=now + timedelta(seconds=rng.uniform(0, first_spread)),
            max_instances=1,
            coalesce=True,
        )
        if self.renewals is not None:
            scheduler.add_job(
                self._run_renewals,
                IntervalTrigger(seconds=d.renewal_check.total_seconds(), timezone=UTC),
                id="renewals",
                next_run_time=now,
                max_instances=1,
                coalesce=True,
            )
        if self.trust_map is not None:
            scheduler.add_job(
                self._run_trust_map,
                IntervalTrigger(seconds=d.trust_map_interval.total_seconds(), timezone=UTC),
                id="trust-map",
                # after the first polls, whose served chains the map judges
                next_run_time=now
                + timedelta(seconds=first_spread + d.probe_timeout.total_seconds()),
                max_instances=1,
                coalesce=True,
            )
        scheduler.start()
        self.scheduler = scheduler

    def _add_poll_job(
        self, scheduler: AsyncIOScheduler, exp: ExpresswayConfig, first: datetime
    ) -> None:
        d = self.config.daemon
        interval = d.poll_interval.total_seconds()
        scheduler.add_job(
            self._poll_job,
            IntervalTrigger(seconds=interval, jitter=interval * d.jitter or None, timezone=UTC),
            args=[exp],
            id=f"poll:{exp.name}",
            name=f"poll {exp.name}",
            next_run_time=first,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=int(interval),
            replace_existing=True,
        )

    async def reload(self, new: Config) -> ReloadPlan:
        """Apply a re-read config's targets; raises ConfigError (nothing changed) when it
        cannot be applied without a restart. Other sections are kept and reported."""
        assert self.monitor is not None and self.scheduler is not None
        plan = plan_reload(self.config, new, renewing=self.renewals is not None)
        if self.renewals is not None:
            missing = sorted(
                {
                    e.renewal.ca_for(kind)
                    for e in new.expressways
                    if e.renewal is not None
                    for kind in ("server", "client")
                }
                - set(self.renewals.connectors)
            )
            if missing:
                raise ConfigError(
                    f"{new.path}: renewal CA {', '.join(missing)} is not running in this "
                    "service; restart it to add a CA (systemctl restart expressway-certd)"
                )
        merged = dataclasses.replace(self.config, expressways=new.expressways)
        self.config = merged
        if self.renewals is not None:
            self.renewals.config = merged
            self.renewals.pipeline.config = merged
        forgotten = await self.monitor.reconfigure(merged)
        if self.ownership is not None:
            # the split of the new target list; new targets owned are scheduled below
            self.ownership.update(self.ownership.live, (e.name for e in merged.expressways))
        for job in self.scheduler.get_jobs():
            name = job.id.removeprefix("poll:")
            if job.id.startswith("poll:") and (name in plan.removed or not self.owns(name)):
                self.scheduler.remove_job(job.id)
        interval = timedelta(seconds=merged.daemon.poll_interval.total_seconds())
        polled = {j.id.removeprefix("poll:") for j in self.scheduler.get_jobs()}
        for exp in self.owned_targets():
            if exp.name in plan.added or exp.name in plan.changed or exp.name not in polled:
                self._add_poll_job(self.scheduler, exp, datetime.now(UTC) + interval)
                # polled now with its new settings, after a poll of the old ones in flight
                self._spawn(self._poll_job(exp, wait=True))
        log.info(
            "config reloaded",
            added=list(plan.added),
            removed=list(plan.removed),
            changed=list(plan.changed),
            endpoints_forgotten=forgotten,
        )
        if plan.needs_restart:
            log.warning(
                "config reloaded; these sections change only on restart",
                sections=list(plan.needs_restart),
                fix="systemctl restart expressway-certd",
            )
        return plan

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _start_http(self) -> None:
        assert self.monitor is not None and self.exposition is not None
        d = self.config.daemon
        app = build_app(
            self.monitor,
            self.registry,
            self.ready,
            exposition=self.exposition.render,
            renewals=self.renewals,
            trust_map=self._latest_trust_map,
            api_token=d.api_token,
            api_read_token=d.api_read_token,
        )
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, d.listen_host, d.listen_port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise CertdError(
                f"daemon: cannot listen on {d.listen_host}:{d.listen_port}: {exc.strerror}; "
                "set [daemon] listen to a free address"
            ) from exc
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else d.listen_port

    def _latest_trust_map(self) -> TrustMapResult | None:
        return self.trust_map.latest if self.trust_map is not None else None

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        store_ok = self.store is not None and await self.store.ping()
        scheduler_ok = self.scheduler is not None and self.scheduler.running
        detail = {
            "store": store_ok,
            "scheduler": scheduler_ok,
            "polls_completed": self.monitor.polls_completed if self.monitor else 0,
        }
        if self.ownership is not None:
            detail["replica"] = {
                "id": self.ownership.me,
                "live_replicas": list(self.ownership.live),
                "owned_targets": sorted(self.ownership.owned),
            }
        return bool(store_ok and scheduler_ok), detail

    async def _poll_job(self, exp: ExpresswayConfig, wait: bool = False) -> None:
        assert self.monitor is not None
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            async with self._poll_slots:
                await self.monitor.poll(exp, wait=wait)
            if exp.name not in {e.name for e in self.config.expressways}:
                await self.monitor.forget_unconfigured()  # removed by a reload mid-poll
        except CertdError as exc:
            log.error("poll failed", target=exp.name, error=str(exc))
        except asyncio.CancelledError:
            return  # shutting down
        except Exception:
            log.exception("poll crashed", target=exp.name)
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def poll_all(self) -> None:
        """Poll every target once, now (used by `demo` and tests)."""
        assert self.monitor is not None
        await asyncio.gather(*(self.monitor.poll(e) for e in self.owned_targets()))

    async def _run_renewals(self) -> None:
        assert self.renewals is not None
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            await self.renewals.run_due()
        except asyncio.CancelledError:
            return  # shutting down; the renewal resumes from its persisted stage next time
        except Exception:
            log.exception("renewal run crashed")
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _read_client_certs(self) -> None:
        """Read the X15.5 client certificate of every owned target with API credentials
        (renewers/clientcert.py: concurrent, each read bounded and isolated)."""
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            targets = list(self.owned_targets())
            await self.client_certs.read_all(targets)
            if self.renewals is not None:
                # the renewal policy on the client certificate's own expiry (kind client)
                for exp in targets:
                    state = self.client_certs.states.get(exp.name)
                    if state is not None:
                        await self.renewals.after_client_read(exp, state)
        except asyncio.CancelledError:
            return  # shutting down
        except Exception:
            log.exception("client certificate read crashed")
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _prune_audit(self) -> None:
        assert self.store is not None
        removed = await self.store.prune_audit(
            self.config.daemon.audit_retention, datetime.now(UTC)
        )
        if removed:
            log.info("pruned audit log", removed=removed)

    async def _audit(self, event: Event) -> None:
        assert self.store is not None
        await self.store.append_event(event)

    async def stop(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            # Shutting down cancels the poll jobs still queued for a slot; APScheduler logs
            # each cancellation as "Error running job" with a traceback (thousands with a
            # large fleet). They are not errors: drop those records, keep real job errors.
            logging.getLogger("apscheduler.executors.default").addFilter(_drop_cancellations)
            self.scheduler.shutdown(wait=False)
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self.notifications is not None:
            await self.notifications.aclose()  # waits briefly for queued notices
        if self._runner is not None:
            await self._runner.cleanup()
        if self.renewals is not None:
            await self.renewals.aclose()
        if self.replicas is not None:
            try:  # the others take our targets at their next heartbeat, not after the timeout
                await self.replicas.deregister()
            except CertdError as exc:
                log.warning("replica deregistration failed", error=str(exc))
        if self.store is not None:
            await self.store.close()
        if self._state_lock is not None:
            self._state_lock.close()  # the next daemon on this SQLite file may start
            self._state_lock = None
        log.info("expressway-certd stopped")


def trust_map_party_seconds(interval: timedelta) -> float:
    """How long one party may take to answer the trust map's reads: half the interval (at
    least 5 s, for slow boxes under short test intervals), at most a minute, so a dead box
    never holds up the next computation for long."""
    return min(max(interval.total_seconds() / 2, 5.0), 60.0)


def _schema_fields(store: Store) -> dict[str, Any]:
    """The schema revision for the start-up log line, and what it was when migrations ran."""
    after, before = store.schema, store.schema_before
    if after is None:
        return {}
    fields: dict[str, Any] = {"schema": after.current}
    if before is not None and before != after:
        fields["schema_upgraded_from"] = "0.1" if before.legacy else (before.current or "empty")
    return fields


@dataclasses.dataclass(frozen=True)
class ReloadPlan:
    """What a reload changes: target names, and sections that need a restart to apply."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    needs_restart: tuple[str, ...]


def plan_reload(old: Config, new: Config, *, renewing: bool) -> ReloadPlan:
    """Compare two configs; ConfigError when the new one cannot be applied by a reload."""
    before = {e.name: e for e in old.expressways}
    after = {e.name: e for e in new.expressways}
    if not renewing and any(e.renewal is not None for e in new.expressways):
        raise ConfigError(
            f"{new.path}: renewal is configured now but the running service started without "
            "any; restart it to start renewing (systemctl restart expressway-certd)"
        )
    sections = {
        "[daemon]": (old.daemon, new.daemon),
        "[ca.*]": (dict(old.cas), dict(new.cas)),
        "[[unified_cm]]": (old.unified_cms, new.unified_cms),
        "[[notifier]]": (old.notifiers, new.notifiers),
    }
    return ReloadPlan(
        added=tuple(sorted(set(after) - set(before))),
        removed=tuple(sorted(set(before) - set(after))),
        changed=tuple(sorted(n for n in set(before) & set(after) if before[n] != after[n])),
        needs_restart=tuple(name for name, (a, b) in sections.items() if a != b),
    )


async def _reload_from_file(daemon: Daemon, path: str, notifier: SystemdNotifier) -> None:
    notifier.reloading()
    try:
        new = await asyncio.to_thread(load_config, path)
        await daemon.reload(new)
    except CertdError as exc:
        log.error(
            "config reload failed; keeping the running config",
            config=path,
            error=str(exc),
            fix="correct the file, then `systemctl reload expressway-certd` again",
        )
    except Exception:
        log.exception("config reload crashed; keeping the running config", config=path)
    finally:
        notifier.ready(_status(daemon))


def _status(daemon: Daemon) -> str:
    c = daemon.config
    endpoints = sum(len(e.endpoints) for e in c.expressways)
    return f"watching {len(c.expressways)} targets, {endpoints} endpoints"


async def serve(
    config: Config,
    stop: asyncio.Event | None = None,
    *,
    notifier: SystemdNotifier | None = None,
    renewal_options: Mapping[str, Any] | None = None,
) -> None:
    """Run the daemon until SIGTERM/SIGINT (or `stop` is set); SIGHUP reloads the config.
    `renewal_options` go to the RenewalManager (tests pass a fault seam through them)."""
    stop = stop or asyncio.Event()
    notifier = notifier or SystemdNotifier.from_environ()
    loop = asyncio.get_running_loop()
    reloads: list[asyncio.Task[None]] = []
    daemon = Daemon(config, renewal_options=dict(renewal_options or {}))

    def request_reload() -> None:
        if daemon.scheduler is None:
            log.warning("SIGHUP before the service was ready; config not reloaded")
            return
        if reloads and not reloads[-1].done():
            log.info("config reload already running; SIGHUP ignored")
            return
        reloads.append(loop.create_task(_reload_from_file(daemon, str(config.path), notifier)))

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, request_reload)
    watchdog: asyncio.Task[None] | None = None
    try:
        await daemon.start()
        notifier.ready(_status(daemon))
        watchdog = loop.create_task(notifier.ping_watchdog())
        await stop.wait()
        log.info("shutting down")
        notifier.stopping()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGHUP)
        for task in reloads:
            await cancel(task)
        await daemon.stop()
        await cancel(watchdog)  # pings until the end: a slow shutdown is not a wedged loop
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
