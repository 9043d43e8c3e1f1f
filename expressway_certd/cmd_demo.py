"""`expressway-certd demo`: the whole renewal cycle on the built-in lab, on embedded defaults.

An Expressway-C/E pair linked by a traversal zone and a Unified CM behind the C, all simulated
on loopback; the C's certificate is inside its renewal window and signed by the old lab CA.
The daemon (SQLite state) notices, and the pipeline renews it from a lab EST CA with another
root (the AKI changes): trust is pushed to the E and to Unified CM, the leaf is installed, the
C restarts, and every endpoint and zone is verified, printed as a live stage timeline. Then
the lab stays up until Ctrl-C (or exits with --once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from expressway_certd_lab.est import ESTSimulator
from expressway_certd_lab.pki import cert_pem
from expressway_certd_lab.renewal import add_renewal, est_ca_section, set_daemon_keys, trust_also
from expressway_certd_lab.scenarios import DEFAULT, SCENARIOS, Scenario, listing, scenario
from expressway_certd_lab.topology import Lab

from expressway_certd.cmd_renew import timeline_line
from expressway_certd.config import load_config
from expressway_certd.daemon import Daemon
from expressway_certd.monitor.events import Event, RenewalBlocked, RenewalCompleted
from expressway_certd.monitor.logging import configure_logging


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the full renewal cycle on the built-in lab",
        description="Simulated Expressway-C/E + Unified CM on loopback; watch a renewal with a "
        "CA change go through every stage. Ctrl-C to stop.",
    )
    p.add_argument("--once", action="store_true", help="exit when the renewal is finished")
    p.add_argument(
        "--listen",
        default="127.0.0.1:9464",
        help="metrics/API address (default 127.0.0.1:9464; a free port when that is busy)",
    )
    p.add_argument("--dir", type=Path, help="keep lab files and state here (default: a temp dir)")
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    p.add_argument(
        "--scenario",
        default=DEFAULT,
        metavar="NAME",
        help=f"run a named lab case (--list-scenarios names them; default {DEFAULT!r})",
    )
    p.add_argument("--list-scenarios", action="store_true", help="name the lab scenarios and exit")
    p.set_defaults(func=run)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _free(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    with socket.socket() as sock:
        try:
            sock.bind((host, int(port)))
        except OSError:
            return f"{host}:0"
    return listen


async def _demo(
    directory: Path,
    listen: str,
    once: bool,
    limit: float,
    case: Scenario = SCENARIOS[DEFAULT],
    observe: Callable[[Lab], None] | None = None,
    renewal_options: Mapping[str, Any] | None = None,
) -> int:
    """Run `case` on a fresh lab; `observe` (tests) sees the simulators before they stop.
    `renewal_options` (tests only, never from the command line) go to the daemon's renewal
    manager, as with `start_service`: e.g. a `clock`, which the scenario's config edit reads
    too (a maintenance window that opens on a whole minute then opens as soon as the scenario
    allows, not up to a minute later), or `devices` polling the lab faster."""
    options = dict(renewal_options or {})
    clock: Callable[[], datetime] = options.get("clock", _utc_now)

    started = time.monotonic()
    est = ESTSimulator().start()
    finished = asyncio.Event()
    outcome: dict[str, Event] = {}
    completed: list[RenewalCompleted] = []

    async def show(event: Event) -> None:
        line = timeline_line(event)
        if line is not None:
            print(f"  +{time.monotonic() - started:5.1f}s {line[10:]}", flush=True)
        if isinstance(event, RenewalCompleted):
            completed.append(event)
        if isinstance(event, RenewalCompleted | RenewalBlocked):
            outcome["last"] = event
            if isinstance(event, RenewalBlocked) or len(completed) >= case.renewals:
                finished.set()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with Lab(
            directory / "lab", restart_seconds=1.0, cert_days=10, **case.lab_kwargs
        ) as lab:
            path = lab.write_config(directory / "expressway-certd.toml")
            text = add_renewal(path.read_text(), case.target, 'ca = "lab-est"')
            text = trust_also(text, directory, cert_pem(est.root.cert))
            text = set_daemon_keys(
                text,
                listen=_free(listen),
                poll_interval="30s",
                renewal_check="1s",
                log_format="console",
                log_level="warning",
            )
            if case.edit_config is not None:
                text = case.edit_config(text, clock())
            path.write_text(text + est_ca_section(est, directory))
            config = load_config(path)
            target = next(sim for sim in lab.expressways if sim.name == case.target)
            old = target.served_cert
            title = "" if case.name == DEFAULT else f", scenario {case.name}"
            print(f"expressway-certd demo: the lab on loopback{title}")
            print(lab.describe())
            if case.intro:
                print(f"\n{case.intro}")
            print(
                f"\n{case.target}'s certificate expires {old.not_valid_after_utc:%Y-%m-%d} "
                f"(inside its renewal window), issued by {old.issuer.rfc4514_string()}."
            )
            print(
                f"The new one comes from the lab EST CA ({est.root.cert.subject.rfc4514_string()}).\n"
            )
            sys.stdout.flush()
            daemon = Daemon(config, renewal_options=options)
            daemon.bus.subscribe(show)
            await daemon.start()
            try:
                base = f"http://{config.daemon.listen_host}:{daemon.http_port}"
                waiter = asyncio.create_task(finished.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait(
                    {waiter, stopper}, timeout=limit, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                stopper.cancel()
                last = outcome.get("last")
                print()
                code = 1
                if isinstance(last, RenewalCompleted) and len(completed) >= case.renewals:
                    what = "" if case.renewals == 1 else f" {len(completed)} certificates"
                    print(f"Renewed{what} in {time.monotonic() - started:.1f} s.")
                    code = 0 if case.expect == "completed" else 1
                elif isinstance(last, RenewalBlocked):
                    print(f"Blocked after {time.monotonic() - started:.1f} s: {last.why}")
                    code = 0 if case.expect == "blocked" else 1
                else:
                    print(f"The renewal did not finish within {limit:g} s.")
                if code and last is not None:
                    print(f"Scenario {case.name} expected the renewal to end {case.expect}.")
                for line in case.report(lab):
                    print(line)
                if observe is not None:
                    observe(lab)
                print(f"  metrics  {base}/metrics")
                print(f"  API      {base}/api/v1/renewals")
                print(f"  config   {path}")
                sys.stdout.flush()
                if not once and not stop.is_set():
                    print("The lab stays up; Ctrl-C to stop.", flush=True)
                    await stop.wait()
            finally:
                await daemon.stop()
    finally:
        est.stop()
    return code


def run(args: argparse.Namespace) -> int:
    if args.list_scenarios:
        print(listing())
        return 0
    try:
        case = scenario(args.scenario)
    except ValueError as exc:
        print(f"expressway-certd demo: {exc}", file=sys.stderr)
        return 2
    configure_logging("warning", "console")
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_demo(args.dir, args.listen, args.once, args.timeout, case))
    with tempfile.TemporaryDirectory(prefix="expressway-certd-demo-") as tmp:
        return asyncio.run(_demo(Path(tmp), args.listen, args.once, args.timeout, case))
