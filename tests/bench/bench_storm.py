"""A renewal storm: `--targets` lab Expressway-Es whose certificates all entered their renewal
window on the same day, renewed by one `expressway-certd run` through the real pipeline
(snapshot, preflight, CSR on the box, EST order, validate, install, restart, verify) against the
lab EST CA, with the CA's limits configured (`[ca.NAME] orders_per_hour`, `concurrent_orders`).

The boxes and the CA run in their own process (tests/bench/storm_lab.py), so their CPU is not
the daemon's. Measured: wall time from the daemon's start until every renewal is done, the
daemon's peak RSS (VmHWM) and CPU, and, from the CA's side (its own log of enrollment
requests), requests per minute, the most requests in flight at once and in any 60 minutes
against the configured limits, and how many distinct CSRs it saw (one per box: no renewal
ordered twice).

A renewal that finds no free order slot waits at submit until an order of the daemon
completes (renewers/calimit.py wakes it then) or, at the latest, 30-60 s later. The default
`concurrent_orders` (100) is above what the pipeline keeps open at once on a 2-core machine
(about 20-30), so there the pipeline sets the pace; `--concurrent-orders 10` makes the limit
bind. `--postgres` keeps the daemon's state in a PostgreSQL server started for the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.bench_daemon import DaemonProcess
from tests.bench.farm import _repo_root
from tests.bench.measure import cpu_seconds, free_port, machine, rss_bytes, sqlite_size, table
from tests.pg import _pg_bin, postgres_server

MiB = 1024 * 1024
CA_NAME = "storm-est"


@dataclass
class StormLab:
    """The storm_lab child process."""

    process: subprocess.Popen[str]
    info: dict[str, Any]

    @classmethod
    def start(
        cls, directory: Path, targets: int, restart_seconds: float, ca_delay: float
    ) -> StormLab:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "tests.bench.storm_lab", "--dir", str(directory),
                "--targets", str(targets), "--restart-seconds", str(restart_seconds),
                "--ca-delay", str(ca_delay),
            ],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=_repo_root(),
        )  # fmt: skip
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            process.wait(10)
            raise RuntimeError(f"storm lab exited with {process.returncode} before it was ready")
        return cls(process, json.loads(line))

    def stats(self) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        return dict(json.loads(self.process.stdout.readline()))

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _secret(path: Path, value: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    return path


def config_toml(
    lab: dict[str, Any],
    directory: Path,
    *,
    listen: str,
    per_hour: int,
    concurrent: int,
    state: str,
) -> str:
    box_secret = _secret(directory / "box.password", lab["password"])
    est_secret = _secret(directory / "est.password", lab["est"]["password"])
    trust = directory / "trust.pem"
    trust.write_text(Path(lab["bundle"]).read_text() + lab["est_root"])
    lines = [
        "[daemon]",
        f'listen = "{listen}"',
        f'state = "{state}"',
        f'data_dir = "{directory / "data"}"',
        'poll_interval = "5m"',
        'renewal_check = "5s"',
        f'trust_bundle = "{trust}"',
        'log_level = "warning"',
        "",
        f"[ca.{CA_NAME}]",
        'kind = "est"',
        f'url = "{lab["est"]["url"]}"',
        f'trust_anchor = "{lab["est"]["anchor"]}"',
        'username = "est"',
        f'password = "file:{est_secret}"',
        f"orders_per_hour = {per_hour}",
        f"concurrent_orders = {concurrent}",
        "",
    ]
    for box in lab["boxes"]:
        lines += [
            "[[expressway]]",
            f'name = "{box["name"]}"',
            'address = "127.0.0.1"',
            'role = "e"',
            'version = "X15.4"',
            'username = "admin"',
            f'password = "file:{box_secret}"',
            f"api_port = {box['api_port']}",
            f'api_ca_file = "{lab["bundle"]}"',
            f'renewal = {{ ca = "{CA_NAME}", approval = "auto" }}',
            f'endpoints = [ {{ host = "127.0.0.1", port = {box["port"]}, service = "https" }} ]',
            "",
        ]
    return "\n".join(lines)


@dataclass(frozen=True)
class StateReader:
    """Reads the daemon's state from outside it, read-only: the SQLite file, or the PostgreSQL
    database (through Debian's `psql`)."""

    sqlite: Path | None = None
    postgres: str | None = None  # the daemon's SQLAlchemy URL

    @property
    def url(self) -> str:
        return self.postgres or str(self.sqlite)

    @property
    def kind(self) -> str:
        return "PostgreSQL" if self.postgres else "SQLite"

    def query(self, sql: str) -> list[tuple[str, ...]] | None:
        """Rows as text; None when the state cannot be read now (not created yet, busy)."""
        if self.postgres is None:
            assert self.sqlite is not None
            if not self.sqlite.exists():
                return None
            try:
                with sqlite3.connect(f"file:{self.sqlite}?mode=ro", uri=True, timeout=5) as db:
                    return [tuple(str(v) for v in r) for r in db.execute(sql).fetchall()]
            except sqlite3.Error:
                return None
        bindir = _pg_bin()
        assert bindir is not None
        url = self.postgres.replace("postgresql+asyncpg://", "postgresql://")
        done = subprocess.run(
            [str(bindir / "psql"), "-XAt", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql, url],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        if done.returncode != 0:
            return None  # the schema is not there yet
        return [tuple(line.split("\t")) for line in done.stdout.splitlines() if line]

    def size(self) -> tuple[int, dict[str, int]]:
        """(bytes the state takes, rows per table)."""
        if self.postgres is None:
            assert self.sqlite is not None
            return sqlite_size(self.sqlite)
        total = self.query("SELECT pg_database_size(current_database())") or [("0",)]
        tables = self.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        rows: dict[str, int] = {}
        for (name,) in tables or []:
            counted = self.query(f'SELECT count(*) FROM "{name}"')
            rows[name] = int(counted[0][0]) if counted else 0
        return int(total[0][0]), rows


def renewal_counts(state: StateReader) -> dict[str, int]:
    """Renewals by status, read from the daemon's state."""
    rows = state.query("SELECT status, count(*) FROM renewals GROUP BY status")
    return {status: int(count) for status, count in rows or []}


def unfinished(state: StateReader, limit: int = 5) -> list[tuple[str, str, str, int]]:
    """The commonest (status, stage, message) of renewals not done, with their counts."""
    rows = state.query(
        "SELECT status, stage, substr(message, 1, 160), count(*) FROM renewals "
        f"WHERE status != 'done' GROUP BY 1, 2, 3 ORDER BY 4 DESC LIMIT {int(limit)}"
    )
    return [(a, b, c, int(n)) for a, b, c, n in rows or []]


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most intervals open at the same instant."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def most_in_window(starts: list[float], seconds: float) -> int:
    """The most starts inside any window of `seconds`."""
    starts = sorted(starts)
    most = first = 0
    for last, at in enumerate(starts):
        while at - starts[first] >= seconds:
            first += 1
        most = max(most, last - first + 1)
    return most


def orders(log: list[list[Any]]) -> list[tuple[float, float]]:
    """Per distinct CSR, as the CA saw it: (first request, the answer that issued), for the
    CSRs that were issued."""
    first: dict[str, float] = {}
    issued: dict[str, float] = {}
    for arrived, answered, status, key in log:
        first[key] = min(first.get(key, arrived), arrived)
        if status == 200:
            issued.setdefault(key, answered)
    return sorted((first[k], issued[k]) for k in issued)


def bench(
    targets: int,
    per_hour: int,
    concurrent: int,
    restart_seconds: float,
    ca_delay: float,
    timeout: float,
    postgres: bool = False,
) -> str:
    state: contextlib.AbstractContextManager[str | None] = (
        postgres_server() if postgres else contextlib.nullcontext()
    )
    with state as url:
        return _bench(targets, per_hour, concurrent, restart_seconds, ca_delay, timeout, url)


def _bench(
    targets: int,
    per_hour: int,
    concurrent: int,
    restart_seconds: float,
    ca_delay: float,
    timeout: float,
    postgres: str | None,
) -> str:
    directory = Path(tempfile.mkdtemp(prefix="certd-bench-storm-"))
    r: dict[str, Any] = {"load_before": os.getloadavg()}
    lab = StormLab.start(directory / "lab", targets, restart_seconds, ca_delay)
    try:
        run_dir = directory / "daemon"
        run_dir.mkdir()
        port = free_port()
        state = StateReader(sqlite=run_dir / "state.db", postgres=postgres)
        config = run_dir / "certd.toml"
        config.write_text(
            config_toml(
                lab.info,
                run_dir,
                listen=f"127.0.0.1:{port}",
                per_hour=per_hour,
                concurrent=concurrent,
                state=state.url,
            )
        )
        log = run_dir / "daemon.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "expressway_certd.cli", "run", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        daemon = DaemonProcess(run_dir, process, port, time.monotonic(), log)
        started = time.time()
        try:
            counts: dict[str, int] = {}
            peak_rss = 0
            last_print = 0.0
            while time.monotonic() - daemon.started < timeout:
                if process.poll() is not None:
                    tail = log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"daemon exited with {process.returncode}:\n{tail}")
                counts = renewal_counts(state)
                peak_rss = max(peak_rss, rss_bytes(process.pid)[0])
                if counts.get("done", 0) >= targets:
                    break
                if time.monotonic() - last_print >= 30:
                    last_print = time.monotonic()
                    print(
                        f"  {time.monotonic() - daemon.started:5.0f} s: renewals {counts}",
                        flush=True,
                    )
                time.sleep(1)
            r["wall"] = time.time() - started
            r["counts"] = counts
            r["cpu"] = cpu_seconds(process.pid)
            r["rss"], r["hwm"] = rss_bytes(process.pid)
            r["peak_rss"] = max(peak_rss, r["rss"])
            r["errors"] = daemon.errors_logged()
            r["unfinished"] = unfinished(state)
            r["db"] = state.size()
            r["state_kind"] = state.kind
            r["machine"] = machine()
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        r["ca"] = lab.stats()
    finally:
        lab.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return report(targets, per_hour, concurrent, ca_delay, started, r)


def report(
    targets: int,
    per_hour: int,
    concurrent: int,
    ca_delay: float,
    started: float,
    r: dict[str, Any],
) -> str:
    ca = r["ca"]
    enrollments = ca["enrollments"]
    spans = orders(enrollments)
    starts = [a for a, _ in spans]
    spread = (max(starts) - min(starts)) if len(starts) > 1 else 0.0
    requests_per_minute = len(enrollments) / (spread / 60) if spread else float(len(enrollments))
    done = r["counts"].get("done", 0)
    errors, by_event = r["errors"]
    in_flight = most_at_once(spans)
    hour = most_in_window(starts, 3600)
    minute = most_in_window(starts, 60)
    rows = [
        ("renewals done", f"{done} of {targets}; by status {r['counts']}", f"{targets}"),
        (
            "wall time, daemon start to last done",
            f"{r['wall']:.0f} s ({r['wall'] / 60:.1f} min)",
            "",
        ),
        (
            "first / last order after start",
            f"{min(starts) - started:.0f} s / {max(starts) - started:.0f} s" if starts else "-",
            "",
        ),
        (
            "CA requests (orders issued)",
            f"{len(enrollments)} ({len(spans)}); {requests_per_minute:.1f} requests per minute",
            "",
        ),
        ("distinct CSRs the CA saw", str(ca["distinct_csrs"]), f"{targets} (one per box)"),
        (
            "orders started per minute",
            f"{len(starts) / (spread / 60) if spread else len(starts):.1f} mean; "
            f"at most {minute} in any 60 s",
            "",
        ),
        (
            "most orders open at once (CA's log)",
            str(in_flight),
            f"<= {concurrent} (concurrent_orders)",
        ),
        ("most orders in any 60 minutes", str(hour), f"<= {per_hour} (orders_per_hour)"),
        (
            "boxes: CSRs made, uploads, restarts",
            f"{ca['csrs_generated']}, {ca['uploads']}, {ca['restarts']}",
            f"{targets} each",
        ),
        (
            "daemon peak RSS (VmHWM)",
            f"{r['hwm'] / MiB:.1f} MiB (RSS at the end {r['rss'] / MiB:.1f})",
            "",
        ),
        (
            "daemon CPU",
            f"{r['cpu']:.0f} s ({1000 * r['cpu'] / max(done, 1):.0f} ms per renewal, polls incl.)",
            "",
        ),
        ("errors in the daemon log", str(errors), ""),
    ]
    rows += [(f"  {count} x", reason, "") for reason, count in sorted(by_event.items())]
    size, table_rows = r["db"]
    what = "SQLite + WAL" if r["state_kind"] == "SQLite" else "PostgreSQL database"
    rows.append((f"state ({what}) at the end", f"{size / MiB:.1f} MiB", ""))
    rows += [
        (f"  rows in {name}", f"{n} ({n / max(done, 1):.1f} per renewal done)", "")
        for name, n in sorted(table_rows.items())
        if name in ("renewals", "renewal_steps", "audit_log", "ca_orders", "leases")
    ]
    rows += [
        (f"  not done: {n} x {status} at {stage}", message, "")
        for status, stage, message, n in r["unfinished"]
    ]
    verdict = (
        "limits held (from the CA's log)"
        if in_flight <= concurrent and hour <= per_hour
        else "A LIMIT WAS EXCEEDED (from the CA's log)"
    )
    title = (
        f"Renewal storm: {targets} lab Expressway-Es due at once, EST CA issuing {ca_delay:g} s "
        f"after a request, orders_per_hour = {per_hour}, concurrent_orders = {concurrent}; "
        f"{verdict}\n"
        f"machine: {r['machine']} (at the end); at the start "
        + ", ".join(f"{v:.2f}" for v in r["load_before"])
    )
    column = f"expressway-certd run ({r['state_kind']} state)"
    return table(title, ["", column, "expected"], rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_storm", description=__doc__)
    parser.add_argument("--targets", type=int, default=1000, help="lab boxes, all due at once")
    parser.add_argument(
        "--orders-per-hour", type=int, default=0, help="[ca] orders_per_hour (default: targets)"
    )
    parser.add_argument("--concurrent-orders", type=int, default=100)
    parser.add_argument(
        "--restart-seconds", type=float, default=0.5, help="how long a simulated restart takes"
    )
    parser.add_argument(
        "--ca-delay", type=float, default=5.0, help="seconds the CA takes to issue (202 until)"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="give up after (seconds)")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="the daemon's state in a PostgreSQL server started for the run (Debian's)",
    )
    args = parser.parse_args(argv)
    per_hour = args.orders_per_hour or args.targets
    print(
        bench(
            args.targets,
            per_hour,
            args.concurrent_orders,
            args.restart_seconds,
            args.ca_delay,
            args.timeout,
            args.postgres,
        )
    )


if __name__ == "__main__":
    main()
