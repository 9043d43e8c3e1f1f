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

- **The floor** (tests/bench/handshake_floor.py): a cold process of the same interpreter that
  only connects and completes the TLS handshake to each endpoint with the same `ssl` module and
  asyncio (no facts, no verdict, no output beyond a count), once with verification off and once
  with the stdlib verifying each chain in the handshake (`ssl.create_default_context(cafile=
  ROOT)`, `check_hostname` off). What CPython on this OpenSSL cannot go below, whatever a scan
  does after the handshake; its CPU measured as ours.

All at the same concurrency; runs alternate: ours, ours with workers, the two floors, theirs.
Then the CLI start: the median wall of `expressway-certd --help`, of a `scan` of one endpoint
and of the floor's one-endpoint handshake with verification, each run `--starts` times, against
the 0.25 s target of issue 11; ours both from the checkout's venv and from the wheel installed
as an operator installs it (`installed_cli`; `--no-wheel` skips it).
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
from typing import Any

from tests.bench.bench_probe import BLACKBOX, Blackbox, Totals
from tests.bench.farm import Farm
from tests.bench.measure import machine, table

START_TARGET = 0.25  # seconds, issue 11 part 6


def certd_command() -> list[str]:
    """The installed console script next to this interpreter (what an operator runs), else the
    module."""
    script = Path(sys.executable).parent / "expressway-certd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "expressway_certd.cli"]


def installed_cli(directory: Path) -> list[str] | None:
    """The product as an operator installs it: the wheel built from a copy of this tree,
    pip-installed with its dependencies (from the index; pip compiles the bytecode) into a
    virtual environment of its own. The checkout's console script goes through setuptools'
    editable-install finder and, where PYTHONDONTWRITEBYTECODE is set, compiles every module of
    ours at each start; an installed wheel does neither. None when it cannot be built."""
    root = Path(__file__).resolve().parents[2]
    src, wheels, venv = directory / "src", directory / "wheels", directory / "installed"
    try:
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(root / name, src / name)
        for name in ("expressway_certd", "monitor", "renewers", "alerts"):
            shutil.copytree(
                root / name, src / name, symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
            )  # fmt: skip
        pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels)]
        subprocess.run([*pip_wheel, str(src)], check=True, capture_output=True, timeout=900)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        (wheel,) = wheels.glob("expressway_certd-*.whl")
        install = [str(venv / "bin" / "pip"), "install", "-q", str(wheel)]
        subprocess.run(install, check=True, capture_output=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"  installed wheel: skipped ({exc})", flush=True)
        return None
    return [str(venv / "bin" / "expressway-certd")]


def run_child(cmd: list[str]) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """(the finished child, its CPU seconds (user + system), wall seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done, cpu, wall


def json_child(cmd: list[str], what: str) -> tuple[Any, float, float]:
    """Run `cmd` (see run_child) and read the JSON it prints: (that JSON, CPU, wall)."""
    done, cpu, wall = run_child(cmd)
    try:
        return json.loads(done.stdout), cpu, wall
    except ValueError as exc:
        raise RuntimeError(
            f"{what} printed no JSON (exit {done.returncode}): {done.stderr[-1500:]}"
        ) from exc


def scan_once(farm: Farm, concurrency: int, workers: int = 1) -> tuple[int, int, float, float]:
    """One cold `scan` of every farm endpoint: (probes, failed or unverified, wall, CPU); the
    CPU of its worker processes (`--workers`) included, as they are waited for."""
    endpoints = [f"{host}:{port}" for host, port, _ in farm.ports]
    cmd = [
        *certd_command(), "scan", "--json", "--no-progress", "--ca-file", str(farm.bundle),
        "--concurrency", str(concurrency), "--workers", str(workers), *endpoints,
    ]  # fmt: skip
    results, cpu, wall = json_child(cmd, "scan")
    if len(results) != len(endpoints):
        raise RuntimeError(f"scan answered for {len(results)} of {len(endpoints)} endpoints")
    bad = [r for r in results if not (r["ok"] and r["chain_verified"])]
    if bad:
        print(f"  ours: {len(bad)} failed or unverified, e.g. {bad[0]['error']}")
    return len(results), len(bad), wall, cpu


FLOOR = Path(__file__).with_name("handshake_floor.py")


def floor_command(farm: Farm, concurrency: int, verify: bool) -> list[str]:
    """The floor's process: the same interpreter running tests/bench/handshake_floor.py as a
    script (no package of ours imported), with or without verification against the root."""
    ca = ["--ca-file", str(farm.bundle)] if verify else []
    return [sys.executable, str(FLOOR), *ca, "--concurrency", str(concurrency)]


def floor_once(farm: Farm, concurrency: int, verify: bool) -> tuple[int, int, float, float]:
    """One cold floor process over every farm endpoint: (handshakes, failed, wall, CPU)."""
    endpoints = [f"{host}:{port}" for host, port, _ in farm.ports]
    counts, cpu, wall = json_child(
        [*floor_command(farm, concurrency, verify), *endpoints], "handshake_floor"
    )
    if counts["ok"] + counts["failed"] != len(endpoints):
        raise RuntimeError(f"handshake_floor counted {counts} for {len(endpoints)} endpoints")
    if counts["failed"]:
        print(f"  floor (verify={verify}): {counts['failed']} handshakes failed")
    return len(endpoints), counts["failed"], wall, cpu


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


def bench(
    endpoints: int, keys: int, concurrency: int, runs: int, starts: int, wheel: bool = True
) -> str:
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
            bare, verified = Totals(), Totals()
            for n in range(runs):
                mine.add(*scan_once(farm, concurrency))
                spread.add(*scan_once(farm, concurrency, workers=0))
                bare.add(*floor_once(farm, concurrency, verify=False))
                verified.add(*floor_once(farm, concurrency, verify=True))
                theirs.add(*blackbox.run(endpoints))
                print(
                    f"  run {n + 1}/{runs}: ours {mine.rate:6.0f}/s {mine.cpu_ms:.3f} ms, "
                    f"--workers 0 {spread.rate:6.0f}/s {spread.cpu_ms:.3f} ms, "
                    f"floor {bare.rate:6.0f}/s {bare.cpu_ms:.3f} ms, "
                    f"floor+verify {verified.rate:6.0f}/s {verified.cpu_ms:.3f} ms, "
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
            one_floor = median_start(
                [*floor_command(farm, 1, verify=True), f"{host}:{port}"], starts
            )
            installed = installed_cli(directory) if wheel else None
            wheel_help = median_start([*installed, "--help"], starts) if installed else None
            wheel_scan = (
                median_start(
                    [*installed, "scan", "--ca-file", str(farm.bundle), f"{host}:{port}"], starts
                )
                if installed
                else None
            )
            load_start = machine()
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    title = (
        f"scan of {endpoints} endpoints from a cold process vs blackbox_exporter (running), "
        f"concurrency {concurrency}, {runs} runs each\n"
        f"machine: {load_scan}\n"
        "ours: whole `expressway-certd scan --json --ca-file ROOT` process (start, imports, "
        "probes, output); `--workers 0`: the same in one forked process per CPU, their CPU "
        "included\n"
        "floor: a cold process of the same Python, ssl and asyncio that only completes each "
        "handshake (tests/bench/handshake_floor.py), verification off, or the stdlib verifying "
        "the chain in the handshake (create_default_context(cafile=ROOT))"
    )
    contenders = (
        ("expressway-certd scan", mine),
        ("expressway-certd scan --workers 0", spread),
        ("floor: handshake only", bare),
        ("floor: handshake + stdlib verify", verified),
        ("blackbox_exporter (verifies)", theirs),
    )
    table_rows = scan_rows(contenders, theirs, verified)
    table_rows.append(("target for ours", "", "", ">= 1", "<= 1", "", ""))
    headers = [
        "", "probes/s", "CPU ms/probe", "probes/s vs blackbox", "CPU vs blackbox",
        "CPU vs floor+verify", "probes (failed)",
    ]  # fmt: skip
    start_rows = [
        (what, f"{wall:.3f} s (min {low:.3f})", f"{cpu:.3f} s", f"< {START_TARGET} s")
        for what, (wall, low, cpu) in (
            ("expressway-certd --help (checkout)", help_start),
            ("expressway-certd scan (1 endpoint, checkout)", one_scan),
            *((("expressway-certd --help (installed wheel)", wheel_help),) if wheel_help else ()),
            *(
                (("expressway-certd scan (1 endpoint, installed wheel)", wheel_scan),)
                if wheel_scan
                else ()
            ),
            ("floor: handshake + stdlib verify (1 endpoint)", one_floor),
        )
    ]
    start_title = f"CLI start, median of {starts} runs\nmachine: {load_start}"
    return (
        table(title, headers, table_rows)
        + "\n\n"
        + table(start_title, ["", "wall", "CPU", "target (wall)"], start_rows)
    )


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def scan_rows(
    contenders: Sequence[tuple[str, Totals]], theirs: Totals, floor: Totals
) -> list[tuple[str, ...]]:
    """One row per contender: its rate and CPU per probe, and the ratios to blackbox_exporter's
    and to the floor with verification (the least a verifying scan in CPython can spend)."""
    return [
        (
            name,
            f"{t.rate:.0f}",
            f"{t.cpu_ms:.3f}",
            ratio(t.rate, theirs.rate),
            ratio(t.cpu_ms, theirs.cpu_ms),
            ratio(t.cpu_ms, floor.cpu_ms),
            f"{t.probes} ({t.failed})",
        )
        for name, t in contenders
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_scan", description=__doc__)
    parser.add_argument("--endpoints", type=int, default=1000, help="farm listeners to scan")
    parser.add_argument("--keys", type=int, default=16, help="distinct RSA keys among them")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--starts", type=int, default=11, help="runs of each CLI start figure")
    parser.add_argument(
        "--no-wheel",
        action="store_true",
        help="skip the start figures of the installed wheel (they need the package index)",
    )
    args = parser.parse_args(argv)
    print(
        bench(
            args.endpoints, args.keys, args.concurrency, args.runs, args.starts, not args.no_wheel
        )
    )


if __name__ == "__main__":
    main()
