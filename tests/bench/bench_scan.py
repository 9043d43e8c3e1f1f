"""`expressway-certd scan` of many endpoints from a cold process against blackbox_exporter
probing the same endpoints, in one run; and how fast the CLI starts.

Endpoints: `--endpoints` listeners of the farm (a process of its own), each serving its own
RSA-2048 leaf + issuing CA (the leaves share `--keys` keys: minting 1,000 RSA keys would take
minutes and a prober cannot tell). Both tools verify every chain against the farm's root:
`scan --ca-file ROOT`, and blackbox_exporter's `tls_config.ca_file: ROOT`.

- **Ours**: one `expressway-certd scan --json --ca-file ROOT HOST:PORT ...` process per run
  (interpreter start, imports, every probe and the JSON output included), CPU = user + system of
  the child from `getrusage(RUSAGE_CHILDREN)`, wall from start to exit; and the same with
  `--workers 0` (one forked worker per CPU; their CPU is in the child's, as it waits for them).
- **Theirs**: blackbox_exporter already running (as it does under Prometheus), one
  `GET /probe?module=...&target=...` per endpoint over `--concurrency` kept-alive connections,
  its CPU from /proc/PID/stat before and after (the HTTP driver's own CPU is charged to nobody).

Both at the same concurrency; runs alternate: ours, ours with workers, theirs. Then the CLI start: the median
wall of `expressway-certd --help` and of a `scan` of one endpoint, each run `--starts` times,
against the 0.25 s target of issue 11.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.bench.bench_probe import BLACKBOX, Blackbox, Totals
from tests.bench.farm import Farm
from tests.bench.measure import machine, table

START_TARGET = 0.25  # seconds, issue 11 part 6


def certd_command() -> list[str]:
    """The installed console script next to this interpreter (what an operator runs), else the
    module."""
    script = Path(sys.executable).parent / "expressway-certd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "expressway_certd.cli"]


def run_child(cmd: list[str]) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """(the finished child, its CPU seconds (user + system), wall seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done, cpu, wall


def scan_once(farm: Farm, concurrency: int, workers: int = 1) -> tuple[int, int, float, float]:
    """One cold `scan` of every farm endpoint: (probes, failed or unverified, wall, CPU); the
    CPU of its worker processes (`--workers`) included, as they are waited for."""
    endpoints = [f"{host}:{port}" for host, port, _ in farm.ports]
    cmd = [
        *certd_command(), "scan", "--json", "--no-progress", "--ca-file", str(farm.bundle),
        "--concurrency", str(concurrency), "--workers", str(workers), *endpoints,
    ]  # fmt: skip
    done, cpu, wall = run_child(cmd)
    try:
        results = json.loads(done.stdout)
    except ValueError as exc:
        raise RuntimeError(
            f"scan printed no JSON (exit {done.returncode}): {done.stderr[-1500:]}"
        ) from exc
    if len(results) != len(endpoints):
        raise RuntimeError(f"scan answered for {len(results)} of {len(endpoints)} endpoints")
    bad = [r for r in results if not (r["ok"] and r["chain_verified"])]
    if bad:
        print(f"  ours: {len(bad)} failed or unverified, e.g. {bad[0]['error']}")
    return len(results), len(bad), wall, cpu


def median_start(cmd: list[str], times: int) -> tuple[float, float, float]:
    """(median wall, min wall, median CPU) of `times` runs of a command that must exit 0."""
    walls, cpus = [], []
    for _ in range(times):
        done, cpu, wall = run_child(cmd)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:3])} ... exited {done.returncode}: {done.stderr}")
        walls.append(wall)
        cpus.append(cpu)
    return statistics.median(walls), min(walls), statistics.median(cpus)


def bench(endpoints: int, keys: int, concurrency: int, runs: int, starts: int) -> str:
    if not Path(BLACKBOX).exists():
        return (
            f"bench_scan: skipped: {BLACKBOX} is missing; "
            "install Debian prometheus-blackbox-exporter (make bench does)"
        )
    directory = Path(tempfile.mkdtemp(prefix="certd-bench-scan-"))
    try:
        with (
            Farm.start(directory / "farm", direct=endpoints, direct_keys=keys) as farm,
            contextlib.ExitStack() as running,
        ):
            blackbox = Blackbox(farm, directory, concurrency)
            running.callback(blackbox.stop)
            blackbox.run(min(100, endpoints))  # its first probes; ours gets no warm-up at all
            blackbox.driver_cpu = 0.0
            mine, spread, theirs = Totals(), Totals(), Totals()
            for n in range(runs):
                mine.add(*scan_once(farm, concurrency))
                spread.add(*scan_once(farm, concurrency, workers=0))
                theirs.add(*blackbox.run(endpoints))
                print(
                    f"  run {n + 1}/{runs}: ours {mine.rate:6.0f}/s {mine.cpu_ms:.3f} ms, "
                    f"--workers 0 {spread.rate:6.0f}/s {spread.cpu_ms:.3f} ms, "
                    f"blackbox {theirs.rate:6.0f}/s {theirs.cpu_ms:.3f} ms (cumulative)",
                    flush=True,
                )
            load_scan = machine()
            host, port, _ = farm.ports[0]
            cli = certd_command()
            help_start = median_start([*cli, "--help"], starts)
            one_scan = median_start(
                [*cli, "scan", "--ca-file", str(farm.bundle), f"{host}:{port}"], starts
            )
            load_start = machine()
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else "-"

    rows = [
        (
            "probes per second",
            f"{mine.rate:.0f}",
            f"{spread.rate:.0f}",
            f"{theirs.rate:.0f}",
            ratio(mine.rate, theirs.rate),
            ratio(spread.rate, theirs.rate),
            ">= 1",
        ),
        (
            "CPU ms per probe",
            f"{mine.cpu_ms:.3f}",
            f"{spread.cpu_ms:.3f}",
            f"{theirs.cpu_ms:.3f}",
            ratio(mine.cpu_ms, theirs.cpu_ms),
            ratio(spread.cpu_ms, theirs.cpu_ms),
            "<= 1",
        ),
        (
            "probes (failed or unverified)",
            f"{mine.probes} ({mine.failed})",
            f"{spread.probes} ({spread.failed})",
            f"{theirs.probes} ({theirs.failed})",
        ),
    ]
    title = (
        f"scan of {endpoints} endpoints from a cold process vs blackbox_exporter (running), "
        f"chains verified, concurrency {concurrency}, {runs} runs each\n"
        f"machine: {load_scan}\n"
        "ours: whole `expressway-certd scan --json` process (start, imports, probes, output); "
        "`--workers 0`: the same in one forked process per CPU, their CPU included"
    )
    headers = [
        "", "expressway-certd", "--workers 0", "blackbox_exporter", "ours/theirs",
        "workers/theirs", "target",
    ]  # fmt: skip
    start_rows = [
        (
            f"expressway-certd {what}",
            f"{wall:.3f} s (min {low:.3f})",
            f"{cpu:.3f} s",
            f"< {START_TARGET} s",
        )
        for what, (wall, low, cpu) in (("--help", help_start), ("scan (1 endpoint)", one_scan))
    ]
    start_title = f"CLI start, median of {starts} runs\nmachine: {load_start}"
    return (
        table(title, headers, rows)
        + "\n\n"
        + table(start_title, ["", "wall", "CPU", "target (wall)"], start_rows)
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_scan", description=__doc__)
    parser.add_argument("--endpoints", type=int, default=1000, help="farm listeners to scan")
    parser.add_argument("--keys", type=int, default=16, help="distinct RSA keys among them")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--starts", type=int, default=11, help="runs of each CLI start figure")
    args = parser.parse_args(argv)
    print(bench(args.endpoints, args.keys, args.concurrency, args.runs, args.starts))


if __name__ == "__main__":
    main()
