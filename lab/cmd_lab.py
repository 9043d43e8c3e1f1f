"""`expressway-certd lab`: run the simulators (Expressway-C/E pair with a traversal zone, Unified
CM) on loopback until Ctrl-C, print their addresses and credentials, optionally write a config.

Imports nothing from monitor/, renewers/ or alerts/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import tempfile
from pathlib import Path
from typing import Any

from expressway_certd_lab.expressway import VERSIONS
from expressway_certd_lab.topology import Lab


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "lab",
        help="run the simulated Expressway pair and Unified CM",
        description=(
            "Start a simulated Expressway-C and Expressway-E (linked by a traversal zone) and a "
            "Unified CM node on loopback, print their addresses and credentials, and keep them "
            "running until Ctrl-C. With --config, also write an expressway-certd config that "
            "points at them (passwords in 0600 files beside it)."
        ),
    )
    p.add_argument("--config", type=Path, help="write a config file for the lab here")
    p.add_argument(
        "--workdir", type=Path, help="keep lab files here (default: a temporary directory)"
    )
    p.add_argument("--version", default="X15.4", choices=VERSIONS, help="Expressway version")
    p.add_argument(
        "--restart-seconds", type=float, default=5.0, help="how long a simulated restart takes"
    )
    p.add_argument("--c-peers", type=int, default=1, help="Expressway-C cluster size (default 1)")
    p.add_argument(
        "--port-base",
        type=int,
        help="fixed ports: C from N, E from N+10, Unified CM from N+20 (default: random)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        workdir = args.workdir
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="certd-lab-")))
        asyncio.run(serve(args, workdir))
    return 0


async def serve(args: argparse.Namespace, workdir: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    lab = Lab(
        workdir,
        version=args.version,
        restart_seconds=args.restart_seconds,
        port_base=args.port_base,
        c_peers=args.c_peers,
    )
    async with lab:
        print(lab.describe())
        if args.config is not None:
            path = lab.write_config(args.config.expanduser().resolve())
            print(f"\nConfig written to {path}")
            print(f"  try: expressway-certd inspect {lab.expressway_c.name} --config {path}")
        print("\nLab running; Ctrl-C stops it.", flush=True)
        await stop.wait()
    print("Lab stopped.")
