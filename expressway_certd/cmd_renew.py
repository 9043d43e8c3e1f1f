"""Renewal verbs: `plan` (dry run), `renew` (run now, with a live stage timeline), `approve`,
`cancel`, `provide`, `status` (per target, with the stage timeline)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from expressway_certd.config import load_config
from expressway_certd.monitor.clientcert import ClientCertState
from expressway_certd.monitor.config import Config, ExpresswayConfig
from expressway_certd.monitor.errors import CertdError, ConfigError
from expressway_certd.monitor.events import (
    ApprovalRequired,
    Event,
    EventBus,
    RenewalBlocked,
    RenewalCompleted,
    StageFailed,
    StageSucceeded,
    StageWaiting,
)
from expressway_certd.monitor.facts import (
    EKU_NAMES,
    facts_from_x509,
    load_certificate,
    load_certificates,
)
from expressway_certd.monitor.logging import configure_logging
from expressway_certd.monitor.operator import operator_name
from expressway_certd.monitor.policy import ServedCert
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.monitor.store import RenewalRow, Store
from expressway_certd.monitor.text import printable, printable_values
from expressway_certd.renewers.ca import build_connector
from expressway_certd.renewers.clientcert import read_client_cert
from expressway_certd.renewers.deadline import estimate, history, inputs_for
from expressway_certd.renewers.expressway import csr_sans
from expressway_certd.renewers.maintenance import next_window_start
from expressway_certd.renewers.manager import RenewalManager
from expressway_certd.renewers.pipeline import (
    CLIENT,
    KINDS,
    SERVER,
    STAGES,
    ConfiguredDevices,
    Pipeline,
    csr_fits,
    dry_run,
    kind_of,
    record_of,
    trust_boxes,
)
from expressway_certd.renewers.trust import pinned_anchors, trust_path
from expressway_certd.renewers.trust import sha256 as tsha256

KIND_HELP = (
    "which certificate: server (default) or client, the X15.5 client certificate (renewed "
    "from [expressway.renewal] client_ca, a private CA)"
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "plan",
        help="dry run: what renewing a target would do",
        description="Read the box and the CA, and print every step a renewal would take. "
        "Changes nothing.",
    )
    p.add_argument("target")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--kind", choices=KINDS, default=SERVER, help=KIND_HELP)
    p.set_defaults(func=run_plan)

    p = subparsers.add_parser(
        "renew",
        help="renew a target's certificate now, showing each stage",
        description="Start (or resume) the target's renewal and run it in the foreground. "
        "Without --now it starts only when the renewal policy says it is due.",
    )
    p.add_argument("target")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--now", action="store_true", help="renew even if not due yet")
    p.add_argument("--kind", choices=KINDS, default=SERVER, help=KIND_HELP)
    p.set_defaults(func=run_renew)

    p = subparsers.add_parser("approve", help="approve a renewal waiting at the approve stage")
    p.add_argument("renewal", help="renewal id (see `status`)")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--by", default=None, help="who approves (default: your user name)")
    p.set_defaults(func=run_approve)

    p = subparsers.add_parser(
        "cancel",
        help="end an active renewal in any state (then `renew --now` starts afresh)",
        description="Cancel a renewal that is running, waiting, failed or blocked. What was "
        "already done on the boxes stays (see docs/renewal.md, 'Ways out').",
    )
    p.add_argument("renewal", help="renewal id (see `status`)")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--by", default=None, help="who cancels (default: your user name)")
    p.set_defaults(func=run_cancel)

    p = subparsers.add_parser(
        "provide",
        help="hand in the signed certificate for a renewal (CAs signed by hand)",
        description="Give a renewal waiting for its certificate (a `manual` CA, or a request "
        "completed by hand) the signed leaf; the daemon validates it and carries on.",
    )
    p.add_argument("renewal", help="renewal id (see `status`)")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--cert", required=True, type=Path, help="the signed server certificate (PEM)")
    p.add_argument("--chain", type=Path, help="intermediate and root CA certificates (PEM)")
    p.set_defaults(func=run_provide)

    p = subparsers.add_parser("status", help="renewal state per target, with the stage timeline")
    p.add_argument("target", nargs="?")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_status)


# ---- timeline -------------------------------------------------------------------------------


def timeline_line(event: Event) -> str | None:
    when = f"{event.time:%H:%M:%S}"
    stage = getattr(event, "stage", "")
    if isinstance(event, StageSucceeded):
        return f"{when}  {event.target:<10} {stage:<10} ok      {event.detail}"
    if isinstance(event, ApprovalRequired):
        return f"{when}  {event.target:<10} {stage:<10} APPROVE {event.why}: expressway-certd approve {event.renewal_id}"
    if isinstance(event, StageWaiting):
        return (
            f"{when}  {event.target:<10} {stage:<10} waits   until {event.until[:19]}: {event.why}"
        )
    if isinstance(event, StageFailed):
        return (
            f"{when}  {event.target:<10} {stage:<10} FAILED  {event.why} (retry {event.retry_at})"
        )
    if isinstance(event, RenewalBlocked):
        return f"{when}  {event.target:<10} {stage:<10} BLOCKED {event.why}"
    if isinstance(event, RenewalCompleted):
        return f"{when}  {event.target:<10} done       {event.summary()}"
    return None


async def print_timeline(event: Event) -> None:
    line = timeline_line(event)
    if line is not None:
        print(printable(line), flush=True)


# ---- helpers --------------------------------------------------------------------------------


def _renewable(config: Config, name: str) -> ExpresswayConfig:
    target = config.target(name)
    if target.renewal is None:
        raise ConfigError(
            f'{config.path}: {name} has no [expressway.renewal] (renewal = {{ ca = "..." }}); '
            "it is monitored only"
        )
    return target


def _prober(config: Config) -> Prober:
    d = config.daemon
    bundles = [p for p in (d.trust_bundle,) if p is not None]
    return Prober(
        TrustStore(bundles, system_roots=d.system_roots), timeout=d.probe_timeout.total_seconds()
    )


# ---- plan -----------------------------------------------------------------------------------


async def _plan(config: Config, name: str, kind: str = SERVER) -> dict[str, Any]:
    target = _renewable(config, name)
    renewal = target.renewal
    assert renewal is not None
    ca_name = renewal.ca_for(kind)
    manager_ca = config.cas[ca_name]

    connector = build_connector(manager_ca, config.daemon.data_dir)
    devices = ConfiguredDevices()
    try:
        # The pipeline's own snapshot and preflight stages, run dry (renewers/pipeline/dryrun.py).
        run = await dry_run(config, target, connector, devices, _prober(config), kind=kind)
        snap, plan = run.record.snapshot, run.record.plan
        stopped = run.stopped
        if snap is None or plan is None:
            stage, why = stopped or ("snapshot", "no outcome")
            raise CertdError(f"{name}: plan: the renewal would stop at {stage}: {why}")
        problems = [stopped[1]] if stopped else []
        async with devices.expressway(target) as box:
            # the csr stage's first read
            pending = await (box.pending_client_csr() if kind == CLIENT else box.pending_csr())
        facts = facts_from_x509(x509.load_pem_x509_certificate(snap.cert_pem.encode()))
        role = snap.role
        problems_text = ""
        try:
            ca_chain = list(await connector.ca_chain())
        except CertdError as exc:
            ca_chain = []
            problems_text = f"CA chain unavailable: {exc}"
        issuing_ski = None
        if ca_chain:
            issuing = facts_from_x509(ca_chain[0])
            issuing_ski = issuing.ski
        ca_change = None if issuing_ski is None else issuing_ski != facts.aki
        anchors = pinned_anchors(manager_ca)
        path = trust_path(ca_chain[0], ca_chain[1:], anchors) if ca_chain else None
        pinned = path is not None
        # what the trust stage would push: the issuing CA and its path to the pinned root
        new_ca = list(dict.fromkeys([ca_chain[0], *path])) if path else ca_chain
        if ca_change and not pinned:
            problems_text = "; ".join(
                filter(None, [problems_text, (
                    f"the CA's chain does not lead to a root pinned for CA '{ca_name}' "
                    f"({'; '.join(anchors.sources) or 'none pinned'}): the renewal would block "
                    f"at validate; {anchors.fix}"
                )])
            )  # fmt: skip
    finally:
        await connector.aclose()
    window = renewal.maintenance_window
    now = datetime.now(UTC)
    restart_at = next_window_start(window, now) if window else now
    ucm_cfg = config.unified_cm(target.unified_cm) if target.unified_cm else None
    deadline = estimate(
        inputs_for(
            target, facts.not_after, manager_ca.kind, *await _history(config, name), ucm_cfg
        ),
        now,
    )
    client = await read_client_cert(target)
    trust_parties = [box.name for box in trust_boxes(config, target)]
    if role == "c" and target.unified_cm:
        ucm = config.unified_cm(target.unified_cm)
        trust_parties += [f"{ucm.name}/{n} ({'+'.join(ucm.trust_stores)})" for n in ucm.nodes]
    pending_text = None
    if pending is not None:
        fits = csr_fits(pending, plan)
        pending_text = f"{', '.join(csr_sans(pending))} ({'reused' if fits else 'does NOT fit: renewal would block'})"
    return {
        "target": name,
        "kind": kind,
        "version": snap.version,
        "role": role,
        "current": {
            "sha256": facts.sha256,
            "not_after": facts.not_after.isoformat(),
            "aki": facts.aki,
            "issuer": facts.issuer,
        },
        "client_cert": _client_entry(client),
        "sans": list(plan.sans),
        "required_eku": [EKU_NAMES.get(e, e) for e in plan.required_eku],
        "ca": {"name": ca_name, "kind": manager_ca.kind},
        "pending_csr": pending_text,
        "ca_change": ca_change,
        "trust_to": trust_parties if ca_change else [],
        "new_ca": [{"sha256": tsha256(c), "subject": c.subject.rfc4514_string()} for c in new_ca]
        if ca_change
        else [],
        "new_ca_pinned": pinned if ca_change else None,
        "approval": renewal.approval,
        "restart_at": restart_at.isoformat(),
        "deadline": {
            "earliest_completion": deadline.earliest_completion.isoformat(),
            "margin_seconds": deadline.margin.total_seconds(),
            "dominating": deadline.dominating,
            "at_risk": deadline.at_risk(),
            "explanation": deadline.explanation(),
        },
        "problems": problems + ([problems_text] if problems_text else []),
        "steps": list(STAGES),
    }


def _client_entry(state: ClientCertState) -> dict[str, Any]:
    """The X15.5 client certificate in the plan: shown, never renewed by this plan."""
    facts = state.facts
    return {
        "status": state.status,
        "sha256": facts.sha256 if facts else None,
        "not_after": facts.not_after.isoformat() if facts else None,
        "issuer": facts.issuer if facts else None,
        "eku_problem": state.eku_problem,
        "note": state.error,
    }


async def _history(config: Config, name: str) -> tuple[list[timedelta], list[timedelta]]:
    """Past approval and issuance durations of the target (none when the store is unusable)."""
    try:
        store = await Store.open(config.daemon.state)
    except CertdError:
        return [], []
    try:
        return await history(store, name)
    finally:
        await store.close()


def run_plan(args: argparse.Namespace) -> int:
    configure_logging("warning", "console")
    config = load_config(args.config)
    plan = asyncio.run(_plan(config, args.target, args.kind))
    if args.json:
        print(json.dumps(plan, indent=2))
        return 1 if plan["problems"] else 0
    plan = printable_values(plan)
    ca_change = {
        True: "YES: new CA (AKI changes)",
        False: "no (same CA)",
        None: "unknown until issued",
    }
    what = ", client certificate" if plan["kind"] == CLIENT else ""
    print(
        f"Renewal plan for {plan['target']} ({plan['version']} Expressway-{(plan['role'] or '?').upper()}{what}); nothing is changed"
    )
    print(
        f"  current     {plan['current']['sha256'][:16]}  not after {plan['current']['not_after']}  issuer {plan['current']['issuer']}"
    )
    client = plan["client_cert"]
    if client["status"] == "ok":
        print(
            f"  client      {client['sha256'][:16]}  not after {client['not_after']}  issuer "
            f"{client['issuer']}  (X15.5 client certificate"
            + (
                ": renewed by this plan)"
                if plan["kind"] == CLIENT
                else f": plan its renewal with 'expressway-certd plan {plan['target']} --kind "
                "client')"
            )
            + (f"; {client['eku_problem']}" if client["eku_problem"] else "")
        )
    elif client["status"] != "not_applicable":
        print(f"  client      {client['status']}: {client['note']}")
    print(f"  1 snapshot  record the facts above (AKI {plan['current']['aki']})")
    print(
        "  2 preflight "
        + ("OK" if not plan["problems"] else "REFUSED: " + "; ".join(plan["problems"]))
    )
    print(
        f"  3 csr       on the box, SANs: {', '.join(plan['sans'])}"
        + (f"; pending CSR: {plan['pending_csr']}" if plan["pending_csr"] else "")
    )
    print(
        f"  4 submit    to CA '{plan['ca']['name']}' ({plan['ca']['kind']}); required EKU: {' + '.join(plan['required_eku'])}"
    )
    print("  5 issued    wait for the CA (persisted handle)")
    print("  6 validate  SANs equal the list above, EKU, KU, key = CSR key, validity, chain")
    print(
        f"  7 trust     CA change: {ca_change[plan['ca_change']]}"
        + (f"; push chain to {', '.join(plan['trust_to'])}" if plan["trust_to"] else "")
    )
    for ca in plan["new_ca"]:
        pin = "chains to a pinned root" if plan["new_ca_pinned"] else "NOT pinned: refused"
        print(f"              new CA {ca['subject']} SHA-256 {ca['sha256']} ({pin})")
    print(f"  8 approve   mode {plan['approval']}")
    print("  9 install   upload the leaf only (PEM)")
    print(f" 10 restart   at {plan['restart_at'][:16]} UTC (maintenance window)")
    print(" 11 verify    every endpoint serves the new certificate; zones Active")
    deadline = plan["deadline"]
    risk = "AT RISK (under 7 days of margin)" if deadline["at_risk"] else "ok"
    print(f"Deadline: {risk}: {deadline['explanation']}")
    return 1 if plan["problems"] else 0


# ---- renew / approve / status -----------------------------------------------------------------


async def _renew(
    config: Config, name: str, now_requested: bool, kind: str = SERVER
) -> RenewalRow | None:
    target = _renewable(config, name)
    store = await Store.open(config.daemon.state, history=config.daemon.history)
    bus = EventBus()
    bus.subscribe(store.append_event)
    bus.subscribe(print_timeline)
    manager = RenewalManager(config, store, bus, _prober(config))
    try:
        await manager.load()
        latest = manager.latest().get(name)
        if latest is not None and latest.active:
            if kind_of(latest) != kind:
                print(
                    f"{name}: renewal {latest.id} of the {kind_of(latest)} certificate is active; "
                    "the box takes one renewal at a time (one CSR slot), so it is resumed now: "
                    f"renew the {kind} certificate when it has ended",
                    flush=True,
                )
            print(
                f"resuming renewal {latest.id} at stage {latest.stage} ({latest.status})",
                flush=True,
            )
            row = (
                await manager.pipeline.retry_now(latest.id)
                if latest.status in ("blocked", "failed")
                else latest
            )
        elif now_requested:
            row = await manager.pipeline.start(
                name, "ManualRequest: expressway-certd renew --now", kind=kind
            )
            what = " (client certificate)" if kind == CLIENT else ""
            print(f"renewal {row.id} started for {name}{what}", flush=True)
        elif kind == CLIENT:
            state = await read_client_cert(target)
            if state.status != "ok":
                print(f"{name}: client certificate {state.status}: {state.error}")
                return None
            await manager.after_client_read(target, state)
            await manager.consider_client(target, explicit=True)
            latest = manager.latest().get(name)
            if latest is None or not latest.active:
                due = manager.next_due_client.get(name)
                print(
                    f"{name}: client certificate not due (renewal due from {due:%Y-%m-%d %H:%M} "
                    "UTC); use --now to renew anyway"
                    if due
                    else f"{name}: client certificate not due"
                )
                return None
            row = latest
        else:
            observations = await asyncio.gather(
                *(manager.pipeline.prober.probe(name, ep) for ep in target.endpoints)
            )
            served = [
                ServedCert(
                    o.endpoint.address, o.endpoint.service, o.facts, o.chain_verified is True
                )
                for o in observations
                if o.ok and o.facts is not None
            ]
            await manager.after_poll(target, served)
            latest = manager.latest().get(name)
            if latest is None or not latest.active:
                due = manager.next_due.get(name)
                print(
                    f"{name}: not due (renewal due from {due:%Y-%m-%d %H:%M} UTC); use --now to renew anyway"
                    if due
                    else f"{name}: not due"
                )
                return None
            row = latest
        while True:
            row = await manager.pipeline.run(row.id)
            if row.status != "waiting" or row.next_at is None:
                break
            delay = (row.next_at - datetime.now(UTC)).total_seconds()
            if delay > 30 or row.stage == "approve":
                print(
                    f"{name}: waits at {row.stage} until {row.next_at:%Y-%m-%d %H:%M} UTC; the daemon continues from there",
                    flush=True,
                )
                break
            await asyncio.sleep(max(delay, 0.2))
        return row
    finally:
        await manager.aclose()
        await store.close()


def run_renew(args: argparse.Namespace) -> int:
    configure_logging("warning", "console")
    config = load_config(args.config)
    row = asyncio.run(_renew(config, args.target, args.now, args.kind))
    if row is None:
        return 0
    return 0 if row.status in ("done", "waiting") else 1


async def _approve(config: Config, renewal_id: str, who: str) -> RenewalRow:
    store = await Store.open(config.daemon.state)
    try:
        manager_bus = EventBus()
        manager_bus.subscribe(store.append_event)

        pipeline = Pipeline(config, store, manager_bus, _prober(config), {})
        return await pipeline.approve(renewal_id, who)
    finally:
        await store.close()


def run_approve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    who = operator_name(args.by or getpass.getuser())
    row = asyncio.run(_approve(config, args.renewal, who))
    what = " (client certificate)" if kind_of(row) == CLIENT else ""
    print(f"renewal {row.id} of {row.target}{what} approved by {who}; the daemon installs it next")
    return 0


async def _cancel(config: Config, renewal_id: str, who: str) -> RenewalRow:
    store = await Store.open(config.daemon.state)
    try:
        bus = EventBus()
        bus.subscribe(store.append_event)

        return await Pipeline(config, store, bus, _prober(config), {}).cancel(renewal_id, who)
    finally:
        await store.close()


def run_cancel(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    who = operator_name(args.by or getpass.getuser())
    row = asyncio.run(_cancel(config, args.renewal, who))
    print(
        f"renewal {row.id} of {row.target} cancelled at stage {row.stage} by {who}; "
        f"'expressway-certd renew {row.target} --now' starts a new one"
    )
    return 0


async def _provide(
    config: Config, renewal_id: str, leaf: x509.Certificate, given: list[x509.Certificate] | None
) -> RenewalRow:
    store = await Store.open(config.daemon.state)
    try:
        row = await store.renewal(renewal_id)
        if row is None:
            raise CertdError(
                f"renewal {renewal_id}: no such renewal (see 'expressway-certd status')"
            )
        renewal = config.target(row.target).renewal
        if given is not None:
            chain_certs = given
        elif renewal is not None:
            connector = build_connector(config.cas[renewal.ca], config.daemon.data_dir)
            try:
                chain_certs = list(await connector.ca_chain())
            finally:
                await connector.aclose()
        else:
            chain_certs = []
        if not chain_certs:
            raise ConfigError(
                f"provide: no CA chain: give --chain CHAIN.pem (intermediates and root), or set "
                f"chain = ... on the CA of {row.target}"
            )
        pipeline = Pipeline(config, store, EventBus(), _prober(config), {})
        return await pipeline.provide(renewal_id, leaf, chain_certs)
    finally:
        await store.close()


def run_provide(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    for path in (args.cert, args.chain):
        if path is not None and not path.is_file():
            raise ConfigError(f"provide: {path} does not exist")
    leaf = load_certificate(args.cert.read_bytes(), source=str(args.cert))
    chain = (
        load_certificates(args.chain.read_bytes(), source=str(args.chain)) if args.chain else None
    )
    row = asyncio.run(_provide(config, args.renewal, leaf, chain))
    print(f"renewal {row.id} of {row.target}: certificate accepted; validation, trust, install, "
          "restart and verify follow")  # fmt: skip
    return 0


async def _status(config: Config, target: str | None) -> list[dict[str, Any]]:
    store = await Store.open(config.daemon.state)
    try:
        out = []
        names = (
            [target] if target else [e.name for e in config.expressways if e.renewal is not None]
        )
        for name in names:
            config.target(name)
            rows = await store.renewals_for(name, limit=1)
            item: dict[str, Any] = {"target": name, "renewal": None}
            if rows:
                row = rows[0]
                steps = await store.steps(row.id)
                record = record_of(row)
                new_ca = (record.trust_cas or ()) if record.ca_changed else ()
                item["renewal"] = {
                    "id": row.id, "kind": record.kind, "status": row.status, "stage": row.stage,
                    "reason": row.reason,
                    "message": row.message, "next_at": row.next_at.isoformat() if row.next_at else None,
                    "created_at": row.created_at.isoformat(),
                    "csr_pem": record.csr_pem if row.active else None,
                    "new_ca": [dataclasses.asdict(c) for c in new_ca],
                    "steps": [
                        {"stage": s.stage, "result": s.result, "at": s.at.isoformat(), "message": s.message}
                        for s in steps
                    ],
                }  # fmt: skip
            out.append(item)
        return out
    finally:
        await store.close()


def run_status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    items = asyncio.run(_status(config, args.target))
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    items = printable_values(items)
    if not items:
        print("no Expressway has [expressway.renewal] configured")
    for item in items:
        r = item["renewal"]
        if r is None:
            print(f"{item['target']}: no renewal yet")
            continue
        nxt = f", next at {r['next_at'][:19]}" if r["next_at"] else ""
        what = " (client certificate)" if r["kind"] == CLIENT else ""
        print(
            f"{item['target']}: renewal {r['id']}{what} {r['status']} at {r['stage']}{nxt} ({r['reason']})"
        )
        if r["message"] and r["status"] != "done":
            print(f"  {r['message']}")
        for ca in r["new_ca"]:
            print(f"  new CA {ca['subject']} SHA-256 {ca['sha256']} (chains to a pinned root)")
        for s in r["steps"]:
            print(f"  {s['at'][11:19]}  {s['stage']:<10} {s['result']:<8} {s['message']}")
    sys.stdout.flush()
    return 0
