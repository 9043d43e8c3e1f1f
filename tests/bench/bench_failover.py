"""Failover at scale: three `expressway-certd run` replicas on one real PostgreSQL against a
loopback TLS farm of `--targets` x 5 endpoints (3,000 by default), one replica killed with
SIGKILL, and a real Prometheus scraping all three.

The integration test tests/integration/test_replicas_failover.py checks the same at 300
endpoints in `make test`; this is its size for issue 11 part 1 ("done when"), with its helpers.
Figures: how long until the three replicas split the targets, the split; in steady state that
every endpoint is exported (so polled) by exactly one replica and Prometheus holds one series
per endpoint; after SIGKILL of the replica with the most targets, the time until every
endpoint was polled again (the first poll of each after the kill, the latest of those) against
the bound poll interval + heartbeat timeout + one heartbeat interval, and that Prometheus again
holds one series per endpoint. The survivors' /metrics are read every `--sample` seconds, so
the figure is that coarse.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from expressway_certd.monitor.replicas import heartbeat_interval, heartbeat_timeout
from tests.bench.bench_daemon import config_toml
from tests.bench.farm import PORTS_PER_HOST, Farm
from tests.bench.measure import free_port, machine, table
from tests.integration.test_replicas_failover import (
    Replica,
    prom_query,
    split_settled,
    start_replica,
)
from tests.pg import _pg_bin, postgres_server

PROMETHEUS = "/usr/bin/prometheus"
PER_ENDPOINT = "count by (target, host, port) (expressway_cert_not_after_timestamp_seconds)"
T = TypeVar("T")
Key = tuple[str, str, int]


def wait_for(what: str, check: Callable[[], T | None], timeout: float, pause: float = 1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench_failover: timed out after {timeout:g} s waiting for {what}")
        time.sleep(pause)


def series_once(base: str, endpoints: int) -> tuple[int, int] | None:
    """(endpoints with a series, the most series of one endpoint), once every endpoint has one."""
    try:
        rows = prom_query(base, PER_ENDPOINT)
    except OSError:
        return None
    if len(rows) < endpoints:
        return None
    return len(rows), max(int(s["value"][1]) for s in rows)


def start_prometheus(
    directory: Path, replicas: list[Replica]
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    directory.mkdir()
    scrape = ", ".join(f'"127.0.0.1:{r.port}"' for r in replicas)
    (directory / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n"
        "scrape_configs:\n  - job_name: expressway-certd\n    scrape_timeout: 5s\n"
        f"    static_configs:\n      - targets: [{scrape}]\n"
    )
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={directory / 'prometheus.yml'}",
         f"--storage.tsdb.path={directory / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(directory / "prometheus.log").open("wb"),
    )  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def bench(targets: int, hosts: int, poll: timedelta, sample: float) -> str:
    if _pg_bin() is None or not Path(PROMETHEUS).exists():
        return (
            "bench_failover: skipped: needs Debian postgresql and prometheus "
            "(make test installs them)"
        )
    endpoints = targets * len(PORTS_PER_HOST)
    names = {f"exp{i:05d}" for i in range(targets)}
    bound = (poll + heartbeat_timeout(poll) + heartbeat_interval(poll)).total_seconds()
    directory = Path(tempfile.mkdtemp(prefix="certd-bench-failover-"))
    r: dict[str, object] = {}
    try:
        with (
            postgres_server() as url,
            Farm.start(directory / "farm", targets=targets, hosts=hosts) as farm,
        ):
            toml = config_toml(
                farm, targets, listen="__LISTEN__", state=Path("STATE"),
                poll_interval=f"{int(poll.total_seconds())}s", concurrency=64,
            )  # fmt: skip
            toml = toml.replace('state = "STATE"', f'state = "{url}"')
            timeout = min(10, int(poll.total_seconds()) // 2)
            toml = toml.replace('probe_timeout = "10s"', f'probe_timeout = "{timeout}s"')
            started = time.monotonic()
            replicas = [start_replica(n, directory / n, toml) for n in ("a", "b", "c")]
            prom: subprocess.Popen[bytes] | None = None
            try:
                owned = wait_for(
                    "three replicas to split the targets",
                    lambda: split_settled(replicas, names),
                    300,
                )
                r["split_at"] = time.monotonic() - started
                r["split"] = sorted(len(s) for s in owned.values())

                def exports() -> dict[str, dict[Key, float]] | None:
                    seen = {rep.name: rep.last_polled() for rep in replicas}
                    return seen if sum(len(s) for s in seen.values()) == endpoints else None

                seen = wait_for("every endpoint exported by one replica", exports, 300, 2)
                r["all_polled_at"] = time.monotonic() - started
                keys = [k for s in seen.values() for k in s]
                r["exported_twice"] = len(keys) - len(set(keys))
                r["owner_mismatch"] = sum(
                    1 for rep in replicas for k in seen[rep.name] if k[0] not in owned[rep.name]
                )
                # One more poll interval: nobody's exports move to another replica.
                time.sleep(poll.total_seconds())
                later = wait_for("the exports again", exports, 120, 2)
                r["moved"] = sum(
                    1 for rep in replicas if set(later[rep.name]) != set(seen[rep.name])
                )
                r["still_split"] = split_settled(replicas, names) == owned
                prom, base = start_prometheus(directory / "prometheus", replicas)
                r["prom_before"] = wait_for(
                    "Prometheus to hold every endpoint's series",
                    lambda: series_once(base, endpoints),
                    180,
                    2,
                )
                victim = max(replicas, key=lambda rep: len(owned[rep.name]))
                survivors = [rep for rep in replicas if rep is not victim]
                r["victim"] = len(owned[victim.name])
                killed_at = time.time()
                victim.process.send_signal(signal.SIGKILL)
                victim.process.wait(10)
                first_after: dict[Key, float] = {}

                def all_polled_again() -> bool:
                    if "takeover" not in r and split_settled(survivors, names):
                        r["takeover"] = time.time() - killed_at
                    for rep in survivors:
                        for key, at in rep.last_polled().items():
                            if at > killed_at and key not in first_after:
                                first_after[key] = at
                    return len(first_after) == endpoints

                wait_for(
                    "the survivors to poll every endpoint", all_polled_again, 4 * bound, sample
                )
                r["again"] = max(first_after.values()) - killed_at
                victim_keys = [k for k in seen[victim.name]]
                r["victim_again"] = max(first_after[k] for k in victim_keys) - killed_at
                after = wait_for(
                    "the survivors to settle", lambda: split_settled(survivors, names), 120
                )
                r.setdefault("takeover", time.time() - killed_at)
                r["kept"] = all(owned[rep.name] <= after[rep.name] for rep in survivors)

                def once_after() -> tuple[int, int] | None:
                    found = series_once(base, endpoints)
                    return found if found and found[1] == 1 else None

                # Until the victim's last scrape goes stale (5 min), Prometheus may hold its
                # series beside the new owner's: count only fresh samples.
                r["prom_after"] = wait_for(
                    "Prometheus to hold one series per endpoint", once_after, 420, 5
                )
                r["machine"] = machine()
            finally:
                if prom is not None:
                    stop(prom)
                for rep in replicas:
                    stop(rep.process)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return report(targets, endpoints, poll, bound, sample, r)


def report(
    targets: int,
    endpoints: int,
    poll: timedelta,
    bound: float,
    sample: float,
    r: dict[str, object],
) -> str:
    before = r["prom_before"]
    after = r["prom_after"]
    assert isinstance(before, tuple) and isinstance(after, tuple)
    rows = [
        ("endpoints (targets x 5)", f"{endpoints} ({targets} x 5)", ""),
        ("targets per replica", " / ".join(str(n) for n in r["split"]), ""),  # type: ignore[attr-defined]
        ("replicas split the targets", f"{r['split_at']:.0f} s after start", ""),
        (
            "every endpoint exported",
            f"{r['all_polled_at']:.0f} s after start (the first poll cycle)",
            f"about {poll.total_seconds():.0f} s after the split",
        ),
        ("endpoints exported by two replicas", str(r["exported_twice"]), "0"),
        ("endpoints exported by a non-owner", str(r["owner_mismatch"]), "0"),
        (
            "replicas whose exports moved in one more interval",
            f"{r['moved']} (split unchanged: {r['still_split']})",
            "0 (True)",
        ),
        (
            "Prometheus: endpoints with a series / most per endpoint",
            f"{before[0]} / {before[1]}",
            f"{endpoints} / 1",
        ),
        ("SIGKILL of the replica owning", f"{r['victim']} targets", ""),
        (
            "survivors own every target after",
            f"{r['takeover']:.1f} s (read every {sample:g} s or slower)",
            f"<= {bound - poll.total_seconds():.0f} s (timeout + heartbeat)",
        ),
        (
            "every endpoint polled again after",
            f"{r['again']:.1f} s (its own endpoints: {r['victim_again']:.1f} s)",
            f"<= {bound:.0f} s (bound)",
        ),
        ("survivors kept their own targets", str(r["kept"]), "True"),
        (
            "Prometheus after: endpoints / most per endpoint",
            f"{after[0]} / {after[1]}",
            f"{endpoints} / 1",
        ),
    ]
    title = (
        f"Failover: 3 replicas on PostgreSQL, {endpoints} endpoints, poll_interval "
        f"{poll.total_seconds():.0f} s (bound = poll interval + heartbeat timeout + "
        f"heartbeat interval = {bound:.0f} s), survivors read every {sample:g} s\n"
        f"machine: {r['machine']}"
    )
    return table(title, ["", "measured", "expected"], rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_failover", description=__doc__)
    parser.add_argument("--targets", type=int, default=600, help="Expressways, 5 endpoints each")
    parser.add_argument("--hosts", type=int, default=4, help="loopback addresses to spread over")
    parser.add_argument("--poll", type=int, default=30, help="poll_interval, seconds")
    parser.add_argument("--sample", type=float, default=2.0, help="read the survivors every")
    args = parser.parse_args(argv)
    print(bench(args.targets, args.hosts, timedelta(seconds=args.poll), args.sample))


if __name__ == "__main__":
    main()
