"""`expressway-certd demo`: the monitor on the built-in lab, on its embedded defaults.

Starts lab Expressway endpoints on loopback (certificates at varied expiry, one inside 7 days,
one without the client-auth EKU an X14.3 box needs), runs the daemon on them with SQLite state,
prints what it sees and the metrics URL, then stays up until Ctrl-C (or exits with --once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lab.fleet import LabFleet
from monitor.config import load_config
from monitor.daemon import Daemon
from monitor.logging import configure_logging
from monitor.watch import EndpointState


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the monitor against the built-in lab",
        description="Start lab endpoints on loopback and monitor them; Ctrl-C to stop.",
    )
    p.add_argument("--once", action="store_true", help="exit after the first report")
    p.add_argument(
        "--listen",
        default="127.0.0.1:9464",
        help="metrics/API address (default 127.0.0.1:9464; a free port when that is busy)",
    )
    p.add_argument("--dir", type=Path, help="keep lab files and state here (default: a temp dir)")
    p.set_defaults(func=run)


def _free(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    with socket.socket() as sock:
        try:
            sock.bind((host, int(port)))
        except OSError:
            return f"{host}:0"
    return listen


def _line(st: EndpointState, now: datetime) -> str:
    ep = f"{st.target:<6} {st.endpoint.service:<9} {st.endpoint.address:<16}"
    if st.facts is None:
        return f"  {ep} FAILED  {st.error_class}: {st.error}"
    days = st.facts.days_left(now)
    flags = []
    if days < 7:
        flags.append("EXPIRES WITHIN 7 DAYS")
    elif days < 30:
        flags.append("expires within 30 days")
    if st.eku_problem:
        flags.append(f"EKU: {st.eku_problem}")
    if st.san_problem:
        flags.append(f"SAN: {st.san_problem}")
    if not st.chain_verified:
        flags.append(f"chain: {st.verify_error}")
    cn = st.facts.common_name or st.facts.subject
    return (
        f"  {ep} {days:6.1f} d  {cn:<22} {st.facts.not_after:%Y-%m-%d}  {'; '.join(flags) or 'ok'}"
    )


async def _demo(directory: Path, listen: str, once: bool) -> int:
    fleet = await LabFleet.start(directory / "lab")
    config_path = directory / "expressway-certd.toml"
    config_path.write_text(
        fleet.config_toml(listen=_free(listen), state=str(directory / "state.db"))
    )
    config = load_config(config_path)
    daemon = Daemon(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await daemon.start()
        await daemon.poll_all()
        assert daemon.monitor is not None
        now = datetime.now(UTC)
        print()
        print(f"expressway-certd demo: {len(daemon.monitor.states)} lab endpoints on loopback")
        print(f"  config   {config_path}")
        print(f"  state    {config.daemon.state}")
        states = daemon.monitor.states
        for exp in config.expressways:
            for ep in exp.endpoints:
                st = states.get((exp.name, ep.host, ep.port))
                if st is not None:
                    print(_line(st, now))
        base = f"http://{config.daemon.listen_host}:{daemon.http_port}"
        print()
        print(f"  metrics  {base}/metrics")
        print(f"  API      {base}/api/v1/endpoints")
        print(f"  scan     expressway-certd scan --ca-file {fleet.ca_bundle} 127.0.0.1:PORT")
        sys.stdout.flush()
        if not once:
            print("Polling every 30 s; Ctrl-C to stop.")
            sys.stdout.flush()
            await stop.wait()
    finally:
        await daemon.stop()
        await fleet.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    configure_logging("warning", "console")
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_demo(args.dir, args.listen, args.once))
    with tempfile.TemporaryDirectory(prefix="expressway-certd-demo-") as tmp:
        return asyncio.run(_demo(Path(tmp), args.listen, args.once))
