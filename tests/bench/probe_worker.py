"""The prober's side of bench_probe, in its own process: our engine (monitor.probe.Prober) probing
the farm, timing itself with its own CPU clock (getrusage: all threads, user + system).

Reads one command per stdin line: `run PROBES` probes that many endpoints (cycling through the
list) in one `probe_many` call and prints one JSON line with the counts and the clocks; EOF ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from expressway_certd.monitor.config import Endpoint
from expressway_certd.monitor.probe import Prober, TrustStore


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _run(prober: Prober, endpoints: list[Endpoint], probes: int) -> dict[str, Any]:
    items = [("bench", endpoints[i % len(endpoints)]) for i in range(probes)]
    wall, cpu = time.perf_counter(), _cpu()
    observations = await prober.probe_many(items)
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    failures = Counter(o.error_class for o in observations if not o.ok)
    unverified = sum(1 for o in observations if o.ok and not o.chain_verified)
    return {
        "probes": probes,
        "ok": probes - sum(failures.values()),
        "failures": dict(failures),
        "unverified": unverified,
        "wall": wall,
        "cpu": cpu,
    }


async def _serve(args: argparse.Namespace) -> None:
    endpoints = [Endpoint(host, int(port), "https") for host, port in json.loads(args.endpoints)]
    prober = Prober(
        TrustStore([Path(args.bundle)]), concurrency=args.concurrency, timeout=args.timeout
    )
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        verb, _, count = line.partition(" ")
        if verb == "run":
            print(json.dumps(await _run(prober, endpoints, int(count))), flush=True)


def main_child() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--endpoints", required=True, help='JSON [["127.0.0.1", port], ...]')
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=10.0)
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main_child()
