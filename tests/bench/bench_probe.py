"""Our TLS prober against blackbox_exporter's tcp+tls prober, on the same loopback endpoints.

Both tools complete a full TLS handshake per probe (RSA-2048 leaf + issuing CA, chain verified
against the same CA file) at the same concurrency, each in its own process, the endpoints served
from a third. Figures: probes per second, prober CPU ms per probe, and ours/theirs.

Our engine counts its own CPU (getrusage in `probe_worker`); blackbox_exporter's is read from
/proc/PID/stat before and after, and is driven exactly as Prometheus drives it: one
`GET /probe?module=...&target=...` per probe over kept-alive connections. The runs alternate
(ours, theirs, ours, theirs, ...) so load from elsewhere on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.bench.farm import Farm
from tests.bench.measure import cpu_seconds, free_port, get, machine, table, wait_http

BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
MODULE = "tls_connect"


@dataclass
class Totals:
    probes: int = 0
    failed: int = 0
    wall: float = 0.0
    cpu: float = 0.0

    def add(self, probes: int, failed: int, wall: float, cpu: float) -> None:
        self.probes += probes
        self.failed += failed
        self.wall += wall
        self.cpu += cpu

    @property
    def rate(self) -> float:
        return self.probes / self.wall if self.wall else 0.0

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / self.probes if self.probes else 0.0


class OurProber:
    """The probe_worker child."""

    def __init__(self, farm: Farm, concurrency: int) -> None:
        endpoints = json.dumps([[h, p] for h, p, _ in farm.ports])
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "tests.bench.probe_worker", "--bundle", str(farm.bundle),
                "--endpoints", endpoints, "--concurrency", str(concurrency),
            ],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def run(self, probes: int) -> tuple[int, int, float, float]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"run {probes}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"probe worker exited with {self.process.wait()}")
        out = json.loads(line)
        if out["failures"] or out["unverified"]:
            print(f"  ours: failures {out['failures']}, unverified chains {out['unverified']}")
        return out["probes"], out["probes"] - out["ok"], out["wall"], out["cpu"]

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(30)


class Blackbox:
    """A blackbox_exporter process with one tcp+tls module trusting the farm's CA."""

    def __init__(self, farm: Farm, directory: Path, concurrency: int) -> None:
        config = directory / "blackbox.yml"
        config.write_text(
            "modules:\n"
            f"  {MODULE}:\n"
            "    prober: tcp\n"
            "    timeout: 10s\n"
            "    tcp:\n"
            "      preferred_ip_protocol: ip4\n"
            "      tls: true\n"
            "      tls_config:\n"
            f"        ca_file: {farm.bundle}\n"
        )
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                BLACKBOX, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_http("127.0.0.1", self.port, "/-/healthy")
        except RuntimeError:
            self.stop()
            raise
        self.targets = [f"{h}:{p}" for h, p, _ in farm.ports]
        self.concurrency = concurrency
        self.driver_cpu = 0.0  # this process asking for the probes, as Prometheus would

    def run(self, probes: int) -> tuple[int, int, float, float]:
        cpu = cpu_seconds(self.process.pid)
        wall, driver = time.perf_counter(), time.process_time()
        failed = asyncio.run(self._drive(probes))
        wall, driver = time.perf_counter() - wall, time.process_time() - driver
        self.driver_cpu += driver
        return probes, failed, wall, cpu_seconds(self.process.pid) - cpu

    async def _drive(self, probes: int) -> int:
        queue = iter(range(probes))
        failed = 0

        async def worker() -> None:
            nonlocal failed
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                for i in queue:
                    target = self.targets[i % len(self.targets)]
                    path = f"/probe?module={MODULE}&target={target}"
                    status, body = await get(reader, writer, "127.0.0.1", path)
                    if status != 200 or b"\nprobe_success 1" not in body:
                        failed += 1
            finally:
                writer.close()

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        return failed

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def bench(endpoints: int, concurrency: int, probes: int, runs: int, warmup: int) -> str:
    if not Path(BLACKBOX).exists():
        return (
            f"bench_probe: skipped: {BLACKBOX} is missing; "
            "install Debian prometheus-blackbox-exporter (make bench does)"
        )
    directory = Path(tempfile.mkdtemp(prefix="certd-bench-probe-"))
    try:
        with (
            Farm.start(directory / "farm", direct=endpoints) as farm,
            contextlib.ExitStack() as running,
        ):
            ours = OurProber(farm, concurrency)
            running.callback(ours.stop)
            blackbox = Blackbox(farm, directory, concurrency)
            running.callback(blackbox.stop)
            ours.run(warmup)
            blackbox.run(warmup)
            blackbox.driver_cpu = 0.0
            mine, theirs = Totals(), Totals()
            farm_cpu = cpu_seconds(farm.pid)
            for n in range(runs):
                mine.add(*ours.run(probes))
                theirs.add(*blackbox.run(probes))
                print(
                    f"  run {n + 1}/{runs}: ours {mine.rate:7.0f}/s {mine.cpu_ms:.3f} ms, "
                    f"blackbox {theirs.rate:7.0f}/s {theirs.cpu_ms:.3f} ms (cumulative)",
                    flush=True,
                )
            farm_cpu = cpu_seconds(farm.pid) - farm_cpu
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    farm_ms = 1000 * farm_cpu / (mine.probes + theirs.probes)
    driver_ms = 1000 * blackbox.driver_cpu / theirs.probes
    rows = [
        (
            "probes per second",
            f"{mine.rate:.0f}",
            f"{theirs.rate:.0f}",
            f"{mine.rate / theirs.rate:.2f}" if theirs.rate else "-",
            ">= 1",
        ),
        (
            "prober CPU ms per probe",
            f"{mine.cpu_ms:.3f}",
            f"{theirs.cpu_ms:.3f}",
            f"{mine.cpu_ms / theirs.cpu_ms:.2f}" if theirs.cpu_ms else "-",
            "<= 1",
        ),
        ("probes (failed)", f"{mine.probes} ({mine.failed})", f"{theirs.probes} ({theirs.failed})"),
    ]
    title = (
        f"TLS probing: {endpoints} loopback endpoints (RSA-2048 leaf + CA, verified), "
        f"concurrency {concurrency}, {runs} x {probes} probes per tool\n"
        f"machine: {machine()}\n"
        f"endpoint farm (separate process): {farm_ms:.3f} CPU ms per handshake served; "
        f"HTTP client asking blackbox_exporter: {driver_ms:.3f} CPU ms per probe (not counted)"
    )
    headers = ["", "expressway-certd", "blackbox_exporter", "ours/theirs", "target"]
    return table(title, headers, rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_probe", description=__doc__)
    parser.add_argument("--endpoints", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--probes", type=int, default=3000, help="per run and tool")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args(argv)
    print(bench(args.endpoints, args.concurrency, args.probes, args.runs, args.warmup))


if __name__ == "__main__":
    main()
