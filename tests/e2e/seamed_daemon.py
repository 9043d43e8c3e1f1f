"""A test-only entry point: the same daemon as `expressway-certd run --config FILE`, built
with a fault seam that SIGKILLs its own process at one named point of the renewal pipeline
(renewers/pipeline/context.py FaultSeam lists the points), and/or device clients that poll
the lab's Unified CM services faster than the real client's 2 s.

    python -m tests.e2e.seamed_daemon --config FILE [--kill-at [TARGET:]POINT] [--host NAME]
                                      [--cucm-poll SECONDS]

`POINT` alone matches any target; `TARGET:POINT` only that target. Production code has no
such hook: the seam and the devices are constructor arguments the real daemon never receives.

`--host NAME`: this process reports NAME as its host name (socket.gethostname), so its lease
owner and replica ids ("host:pid:token") say it runs on another machine than its peers: a
replica test then cannot pass by the same-host shortcut of renewers/pipeline/locks.py (a
lease whose holder is a dead process of this host is taken over at once).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from expressway_certd.cmd_run import start_service
from expressway_certd.renewers.pipeline import ConfiguredDevices, FaultSeam


def kill_at(wanted: str) -> FaultSeam:
    """A seam that SIGKILLs this process when the pipeline reaches `wanted`."""

    def seam(target: str, point: str) -> None:
        if wanted in (point, f"{target}:{point}"):
            os.kill(os.getpid(), signal.SIGKILL)

    return seam


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seamed_daemon")
    parser.add_argument("--config", "-c", required=True)
    parser.add_argument("--kill-at", help="[TARGET:]POINT")
    parser.add_argument("--host", help="the host name this process reports")
    parser.add_argument("--cucm-poll", type=float, help="Unified CM service poll interval (s)")
    args = parser.parse_args(argv)
    if args.host:
        host: str = args.host
        socket.gethostname = lambda: host  # test-only: a replica on "another machine"
    options: dict[str, Any] = {}
    if args.kill_at:
        options["fault_seam"] = kill_at(args.kill_at)
    if args.cucm_poll:
        options["devices"] = ConfiguredDevices(cucm_overrides={"poll_interval": args.cucm_poll})
    return start_service(args.config, renewal_options=options)


if __name__ == "__main__":
    sys.exit(main())
