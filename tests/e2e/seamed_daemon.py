"""A test-only entry point: the same daemon as `expressway-certd run --config FILE`, built
with a fault seam that SIGKILLs its own process at one named point of the renewal pipeline
(renewers/pipeline/context.py FaultSeam lists the points).

    python -m tests.e2e.seamed_daemon --config FILE --kill-at [TARGET:]POINT

`POINT` alone matches any target; `TARGET:POINT` only that target. Production code has no
such hook: the seam is a constructor argument the real daemon never receives.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from expressway_certd.cmd_run import start_service
from renewers.pipeline import FaultSeam


def kill_at(wanted: str) -> FaultSeam:
    """A seam that SIGKILLs this process when the pipeline reaches `wanted`."""

    def seam(target: str, point: str) -> None:
        if wanted in (point, f"{target}:{point}"):
            os.kill(os.getpid(), signal.SIGKILL)

    return seam


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seamed_daemon")
    parser.add_argument("--config", "-c", required=True)
    parser.add_argument("--kill-at", required=True, help="[TARGET:]POINT")
    args = parser.parse_args(argv)
    return start_service(args.config, renewal_options={"fault_seam": kill_at(args.kill_at)})


if __name__ == "__main__":
    sys.exit(main())
