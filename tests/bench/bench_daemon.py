"""The daemon at scale: RSS while monitoring 10,000 endpoints polled every minute, and the time to
render /metrics for them.

2,000 simulated Expressway-Es x 5 endpoints (four direct TLS ports and XMPP STARTTLS), each box
serving its own RSA-2048 leaf by SNI from the farm process, all on loopback addresses
127.0.0.1..127.0.0.H. The daemon runs as `expressway-certd run` in its own process with SQLite
state. Measured: when /readyz first counts a poll per target; then, over a window of steady
polling, target polls per minute and the daemon's CPU (/proc); RSS after it; GET /metrics, median
of several; errors in the daemon's log. A daemon watching one box gives what the interpreter and
libraries cost before any endpoint state.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.farm import PORTS_PER_HOST, Farm, target_name
from tests.bench.measure import (
    cpu_seconds,
    free_port,
    http_get,
    machine,
    rss_bytes,
    sqlite_size,
    table,
)

MiB = 1024 * 1024
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Timeout)\w*: ")
SERVICES = ("https", "sip-tls", "traversal", "mra", "xmpp")


def config_toml(
    farm: Farm, targets: int, *, listen: str, state: Path, poll_interval: str, concurrency: int
) -> str:
    lines = [
        "[daemon]",
        f'listen = "{listen}"',
        f'state = "{state}"',
        f'poll_interval = "{poll_interval}"',
        'probe_timeout = "10s"',
        f"concurrency = {concurrency}",
        f'trust_bundle = "{farm.bundle}"',
        'log_level = "warning"',
        "",
    ]
    per_host = len(PORTS_PER_HOST)
    hosts = len(farm.ports) // per_host
    for i in range(targets):
        name = target_name(i)
        ports = farm.ports[(i % hosts) * per_host : (i % hosts + 1) * per_host]
        lines += [
            "[[expressway]]",
            f'name = "{name.split(".")[0]}"',
            'role = "e"',
            'version = "X15.4"',
            f'address = "{name}"',
            "endpoints = [",
        ]
        for (host, port, mode), service in zip(ports, SERVICES, strict=True):
            starttls = ', starttls = "xmpp"' if mode == "xmpp" else ""
            lines.append(
                f'  {{ host = "{host}", port = {port}, service = "{service}", '
                f'sni = "{name}"{starttls} }},'
            )
        lines += ["]", ""]
    return "\n".join(lines)


@dataclass
class DaemonProcess:
    """`expressway-certd run` in a child process."""

    directory: Path
    process: subprocess.Popen[bytes]
    port: int
    started: float
    log: Path

    @classmethod
    def start(cls, farm: Farm, directory: Path, targets: int, concurrency: int) -> DaemonProcess:
        directory.mkdir(parents=True, exist_ok=True)
        port = free_port()
        config = directory / "certd.toml"
        config.write_text(
            config_toml(
                farm,
                targets,
                listen=f"127.0.0.1:{port}",
                state=directory / "state.db",
                poll_interval="1m",
                concurrency=concurrency,
            )
        )
        log = directory / "daemon.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "expressway_certd.cli", "run", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return cls(directory, process, port, time.monotonic(), log)

    def polls_completed(self, timeout: float = 10) -> int:
        """From /readyz, which waits for a database connection: slow when the pool is busy."""
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{tail}")
        try:
            _, body, _ = http_get("127.0.0.1", self.port, "/readyz", timeout=timeout)
        except (OSError, TimeoutError):
            return -1  # not listening yet
        return int(json.loads(body).get("polls_completed", 0))

    def wait_polls(self, count: int, timeout: float) -> tuple[float, int]:
        """Wait until `count` target polls completed, or `timeout`: (seconds since start, polls
        completed). A slow machine gets a figure, not an exception."""
        deadline = time.monotonic() + timeout
        done = self.polls_completed()
        while done < count and time.monotonic() < deadline:
            time.sleep(0.25)
            done = self.polls_completed()
        return time.monotonic() - self.started, done

    def errors_logged(self) -> tuple[int, dict[str, int]]:
        """Error lines in the daemon's JSON log: (count, count by event)."""
        by_event: dict[str, int] = {}
        total = 0
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") == "error":
                total += 1
                # The raised exception's own line ("module.Error: message"), not SQL or params.
                detail = str(entry.get("exception") or entry.get("error") or "").splitlines()
                raised = [d for d in detail if _EXCEPTION_LINE.match(d)] or detail or [""]
                reason = f"{entry.get('event')}: {raised[-1]}"[:100]
                by_event[reason] = by_event.get(reason, 0) + 1
        return total, by_event

    def metrics(self, times: int) -> tuple[list[float], int, int]:
        """Render /metrics `times` times: (seconds each, body bytes, sample lines)."""
        seconds = []
        body = b""
        for _ in range(times):
            status, body, took = http_get("127.0.0.1", self.port, "/metrics", timeout=60)
            if status != 200:
                raise RuntimeError(f"/metrics answered {status}")
            seconds.append(took)
        samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        return seconds, len(body), samples

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def bench(
    targets: int, hosts: int, window: float, concurrency: int, renders: int, first_wait: float
) -> str:
    endpoints = targets * len(PORTS_PER_HOST)
    directory = Path(tempfile.mkdtemp(prefix="certd-bench-daemon-"))
    r: dict[str, Any] = {}
    try:
        with Farm.start(directory / "farm", targets=targets, hosts=hosts) as farm:
            base = DaemonProcess.start(farm, directory / "baseline", 1, concurrency)
            try:
                base.wait_polls(1, 60)
                r["base_rss"] = rss_bytes(base.process.pid)[0]
            finally:
                base.stop()

            daemon = DaemonProcess.start(farm, directory / "full", targets, concurrency)
            try:
                pid = daemon.process.pid
                r["first_at"], r["first_polls"] = daemon.wait_polls(targets, first_wait)
                r["first_rss"] = rss_bytes(pid)[0]
                r["db_first"] = sqlite_size(daemon.directory / "state.db")
                print(
                    f"  first poll cycle: {r['first_polls']} target polls seen "
                    f"{r['first_at']:.1f} s after start, RSS {r['first_rss'] / MiB:.1f} MiB",
                    flush=True,
                )
                # Steady state: what one poll interval costs and achieves.
                polls = daemon.polls_completed(timeout=90)
                cpu, at = cpu_seconds(pid), time.monotonic()
                time.sleep(window)
                polls = daemon.polls_completed(timeout=90) - polls
                r["cpu"], r["wall"] = cpu_seconds(pid) - cpu, time.monotonic() - at
                r["polls"] = polls * 60 / r["wall"]
                r["rss"], r["hwm"] = rss_bytes(pid)
                r["db_after"] = sqlite_size(daemon.directory / "state.db")
                print(
                    f"  steady state: {r['polls']:.0f} target polls per minute, "
                    f"RSS {r['rss'] / MiB:.1f} MiB",
                    flush=True,
                )
                r["render"] = daemon.metrics(renders)
                r["errors"] = daemon.errors_logged()
            finally:
                daemon.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    seconds, size, samples = r["render"]
    render_ms = 1000 * statistics.median(seconds)
    # Per endpoint the daemon holds state for (all of them once the first cycle completed).
    held = r["db_after"][1].get("endpoint_state") or endpoints
    per_endpoint = (r["rss"] - r["base_rss"]) / held
    errors, by_event = r["errors"]
    polled = r["polls"] * len(PORTS_PER_HOST) * r["wall"] / 60  # endpoint polls in the window
    cpu_per_poll = f"{1000 * r['cpu'] / polled:.2f} ms per endpoint poll" if polled else "-"
    rows = [
        ("endpoints (targets x endpoints)", f"{endpoints} ({targets} x 5)", ""),
        (
            "first poll cycle completed",
            f"{r['first_at']:.1f} s after start ({r['first_polls']} target polls)",
            "< 60 s",
        ),
        (
            "target polls per minute, steady",
            f"{r['polls']:.0f} ({r['polls'] / targets:.0%} of the {targets} due)",
            f">= {targets}",
        ),
        (
            "RSS after that",
            f"{r['rss'] / MiB:.1f} MiB (peak {r['hwm'] / MiB:.1f})",
            "< 150 MiB",
        ),
        ("RSS after the first cycle", f"{r['first_rss'] / MiB:.1f} MiB", ""),
        ("RSS of a daemon watching 1 target", f"{r['base_rss'] / MiB:.1f} MiB", ""),
        (
            "RSS per endpoint beyond that",
            f"{per_endpoint / 1024:.1f} KiB ({held} endpoints in the state)",
            "",
        ),
        (
            "daemon CPU, steady",
            f"{r['cpu'] / r['wall']:.0%} of one core ({cpu_per_poll})",
            "",
        ),
        (
            f"GET /metrics (median of {len(seconds)})",
            f"{render_ms:.0f} ms (min {1000 * min(seconds):.0f}, max {1000 * max(seconds):.0f})",
            "< 250 ms",
        ),
        ("/metrics size", f"{size / MiB:.1f} MiB, {samples} samples", ""),
        ("errors in the daemon log", str(errors), "0"),
    ]
    (size_first, rows_first), (size_after, rows_after) = r["db_first"], r["db_after"]
    rows.append(
        (
            "state (SQLite + WAL), first cycle / after",
            f"{size_first / MiB:.1f} MiB / {size_after / MiB:.1f} MiB "
            f"({size_after / held / 1024:.1f} KiB per endpoint)",
            "",
        )
    )
    rows += [
        (f"  rows in {name}", f"{rows_first[name]} / {rows_after.get(name, 0)}", "")
        for name in sorted(rows_first)
        if rows_first[name] or rows_after.get(name)
    ]
    rows += [(f"  {count} x", reason, "") for reason, count in sorted(by_event.items())]
    title = (
        f"Daemon at scale: {endpoints} endpoints polled every minute, concurrency {concurrency}\n"
        f"machine: {machine()}"
    )
    return table(title, ["", "expressway-certd", "target"], rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_daemon", description=__doc__)
    parser.add_argument("--targets", type=int, default=2000, help="Expressways, 5 endpoints each")
    parser.add_argument("--hosts", type=int, default=4, help="loopback addresses to spread over")
    parser.add_argument(
        "--window", type=float, default=60.0, help="seconds of steady polling to measure"
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--renders", type=int, default=7, help="GET /metrics this many times")
    parser.add_argument(
        "--first-wait",
        type=float,
        default=240,
        help="seconds to wait for the first poll cycle before measuring anyway (a busy machine)",
    )
    args = parser.parse_args(argv)
    print(
        bench(
            args.targets, args.hosts, args.window, args.concurrency, args.renders, args.first_wait
        )
    )


if __name__ == "__main__":
    main()
