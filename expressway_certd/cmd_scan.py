"""`expressway-certd scan HOST[:PORT] ...`: what each endpoint serves, in the words of Cisco's
step A ("Show (decoded)"), for many hosts at once; `--json` for scripts."""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import os
import selectors
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from expressway_certd.monitor.endpoint import SERVICE_BY_PORT, Endpoint
from expressway_certd.monitor.errors import CertdError, ConfigError
from expressway_certd.monitor.facts import facts_json
from expressway_certd.monitor.probe import Observation, Prober, TrustStore
from expressway_certd.monitor.text import printable

DEFAULT_PORT = 443


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "scan",
        help="show the certificates endpoints serve",
        description=(
            "Probe TLS endpoints and print the decoded certificate of each (subject, SANs, KU, "
            "EKU, AKI, issuer, expiry, chain status, advisories). Exit code 1 when any endpoint "
            "failed or its chain did not verify (as OpenSSL's `verify` would judge it with the "
            "same bundle); advisories (`lint`) never change the exit code."
        ),
    )
    p.add_argument("endpoints", nargs="+", metavar="HOST[:PORT]", help="port defaults to 443")
    p.add_argument(
        "--starttls",
        choices=["xmpp"],
        help="negotiate STARTTLS first (port 5222 uses xmpp automatically)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.add_argument(
        "--ca-file",
        action="append",
        default=[],
        type=Path,
        help="PEM bundle to verify chains against (repeatable; default: system roots)",
    )
    p.add_argument(
        "--system-roots",
        action="store_true",
        help="also trust the system roots when --ca-file is given",
    )
    p.add_argument("--concurrency", type=int, default=32, help="parallel probes (default 32)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-probe deadline, seconds")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help=(
            "processes to probe in (default 1; 0: one per CPU, each with at least "
            f"{MIN_PER_WORKER} endpoints): more probes per second on several CPUs, at some "
            "more CPU per probe"
        ),
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress on stderr (default: when stderr is a terminal and >3 endpoints)",
    )
    p.set_defaults(func=run)


def parse_endpoint(text: str, starttls: str | None) -> Endpoint:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":") or str(DEFAULT_PORT)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif text.count(":") > 1:  # bare IPv6
        host, port_text = text, str(DEFAULT_PORT)
    else:
        host, port_text = text, str(DEFAULT_PORT)
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"scan: {text!r} is not HOST[:PORT] (IPv6 as [addr]:port)")
    port = int(port_text)
    tls = starttls or ("xmpp" if port == 5222 else None)
    return Endpoint(host, port, SERVICE_BY_PORT.get(port, f"tls-{port}"), tls)


def observation_json(obs: Observation, now: datetime) -> dict[str, Any]:
    facts = obs.facts
    return {
        "endpoint": obs.endpoint.address,
        "ok": obs.ok,
        "error": obs.error or (obs.verify_error if obs.chain_verified is False else None),
        "error_class": obs.error_class
        or ("verification_failed" if obs.chain_verified is False else None),
        "tls_version": obs.tls_version,
        "handshake_ms": round(obs.duration * 1000, 1),
        **facts_json(facts),
        "days_left": round(facts.days_left(now), 2) if facts else None,
        "chain_length": len(obs.chain_der),
        "chain_verified": obs.chain_verified,
        "lint": [finding.as_dict() for finding in obs.lint],
    }


def _colon_hex(value: str | None) -> str:
    if not value:
        return "-"
    return ":".join(value[i : i + 2] for i in range(0, len(value), 2)).upper()


def render_text(obs: Observation, now: datetime, out: TextIO) -> None:
    head = obs.endpoint.address + (
        f" (STARTTLS {obs.endpoint.starttls})" if obs.endpoint.starttls else ""
    )
    head = printable(head)
    if not obs.ok:
        print(f"{head}  FAILED [{obs.error_class}] {printable(obs.error)}", file=out)
        print(file=out)
        return
    facts = obs.facts
    assert facts is not None
    days = facts.days_left(now)
    status = "EXPIRED" if days < 0 else ("EXPIRING" if days < 30 else "OK")
    print(f"{head}  {status}  {printable(obs.tls_version)}  {obs.duration * 1000:.0f} ms", file=out)
    rows = [
        ("Subject", facts.subject),
        ("Subject Alternative Names", ", ".join(str(s) for s in facts.sans) or "(none)"),
        ("Key Usage", ", ".join(facts.key_usage) or "(none)"),
        ("Extended Key Usage", ", ".join(facts.eku_names()) or "(none: any use)"),
        ("Authority Key Identifier", _colon_hex(facts.aki)),
        ("Issuer", facts.issuer),
        ("Not after", f"{facts.not_after:%Y-%m-%d %H:%M:%S} UTC ({days:.1f} days left)"),
        ("Public key", f"{facts.key_type} {facts.key_size}, {facts.signature_algorithm}"),
        ("SHA-256", facts.sha256),
        (
            "Chain",
            f"verified ({len(obs.chain_der)} certificates served)"
            if obs.chain_verified
            else f"NOT verified: {obs.verify_error} ({len(obs.chain_der)} certificates served)",
        ),
    ]
    for label, value in rows:
        print(f"  {label:<27} {printable(value)}", file=out)
    for finding in obs.lint:
        about = f" ({finding.subject})" if finding.subject else ""
        print(
            f"  {'Advisory':<27} {printable(f'{finding.finding}{about}: {finding.detail}')}",
            file=out,
        )
    print(file=out)


def progress_ticker(
    endpoints: list[Endpoint], progress: TextIO | None
) -> Callable[[int, str], None]:
    """What runs as each probe ends, given its index and `ok` or the failure's class:
    `[done/total] endpoint ok|reason` on `progress`."""
    done = 0
    total = len(endpoints)

    def tick(index: int, mark: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            address = printable(endpoints[index].address)
            progress.write(f"\r[{done}/{total}] {address} {mark}\033[K")
            if done == total:
                progress.write("\n")
            progress.flush()

    return tick


def _mark(obs: Observation) -> str:
    return "ok" if obs.ok else str(obs.error_class)


async def scan(
    endpoints: list[Endpoint],
    trust: TrustStore,
    *,
    concurrency: int,
    probe_timeout: float,
    on_done: Callable[[Observation], None] | None = None,
) -> list[Observation]:
    """Probe every endpoint in this process; observations in input order."""
    prober = Prober(trust, concurrency=concurrency, timeout=probe_timeout)
    return await prober.probe_many([("scan", ep) for ep in endpoints], on_done=on_done)


@dataclass(frozen=True)
class Shown:
    """One endpoint's part of the output, rendered in the process that probed it."""

    text: str  # its object of the --json array (indented as an item), or its text block
    failed: bool
    unverified: bool
    expiring: bool  # within 30 days


def show(obs: Observation, now: datetime, as_json: bool) -> Shown:
    if as_json:
        item = json.dumps(observation_json(obs, now), indent=2)
        text = "\n".join("  " + line for line in item.split("\n"))  # as json.dumps nests it
    else:
        out = io.StringIO()
        render_text(obs, now, out)
        text = out.getvalue()
    return Shown(
        text,
        failed=not obs.ok,
        unverified=obs.ok and not obs.chain_verified,
        expiring=bool(obs.facts and obs.facts.days_left(now) < 30),
    )


# A worker process must get this many endpoints to be worth its fork and its own caches.
MIN_PER_WORKER = 100
_RECORD = struct.Struct(">I")  # length of the pickled record that follows


def auto_workers(endpoints: int, concurrency: int) -> int:
    """Processes for a scan: one per CPU this process may run on, as long as each gets
    MIN_PER_WORKER endpoints and one slot of the concurrency; 1 (no fork) otherwise."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, endpoints // MIN_PER_WORKER, concurrency))


def shares(total: int, workers: int, concurrency: int) -> list[tuple[list[int], int]]:
    """(endpoint indexes, concurrency) of each worker: endpoints dealt in turn (slow ones
    spread), the concurrency split so that all workers together keep `concurrency` probes in
    flight, as one process would."""
    workers = max(1, min(workers, total, concurrency))
    return [
        (list(range(k, total, workers)), concurrency // workers + (k < concurrency % workers))
        for k in range(workers)
    ]


def scan_in_workers(
    endpoints: list[Endpoint],
    trust: TrustStore,
    *,
    workers: int,
    concurrency: int,
    probe_timeout: float,
    progress: TextIO | None,
    as_json: bool,
) -> list[Shown]:
    """Probe and render the endpoints in `workers` forked processes (a Python process runs
    on one CPU), in input order. Each worker reports every probe as it ends (progress), then
    sends its endpoints rendered; a worker that dies or fails is a CertdError.

    Forked before any event loop or thread exists, each worker inherits the loaded modules
    and the trust store, runs its own event loop and keeps its own caches.
    """
    tick = progress_ticker(endpoints, progress)
    plan = shares(len(endpoints), workers, concurrency)
    if len(plan) == 1:
        position = {id(ep): i for i, ep in enumerate(endpoints)}
        observations = asyncio.run(
            scan(
                endpoints,
                trust,
                concurrency=concurrency,
                probe_timeout=probe_timeout,
                on_done=lambda obs: tick(position[id(obs.endpoint)], _mark(obs)),
            )
        )
        now = datetime.now(UTC)
        return [show(obs, now, as_json) for obs in observations]
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # a child must not write the parent's buffered output again
    gc.freeze()  # the workers' collections then leave the inherited objects' pages shared
    children: list[tuple[int, int]] = []
    for indexes, slots in plan:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the parent's code, even on Ctrl-C
            code = 1
            try:
                os.close(read_end)
                for _, other in children:
                    os.close(other)
                share = [endpoints[i] for i in indexes]
                code = _worker(write_end, share, indexes, trust, slots, probe_timeout, as_json)
            finally:
                os._exit(code)
        os.close(write_end)
        children.append((pid, read_end))
    gc.unfreeze()
    shown: dict[int, Shown] = {}
    failures: list[str] = []
    try:
        for record in _records([fd for _, fd in children]):
            if record[0] == "tick":
                tick(record[1], record[2])
            elif record[0] == "shown":
                shown.update(record[1])
            else:
                failures.append(str(record[1]))
    finally:
        for pid, fd in children:
            os.close(fd)
            os.waitpid(pid, 0)
    if failures or len(shown) != len(endpoints):
        raise CertdError(
            f"scan: {len(endpoints) - len(shown)} of {len(endpoints)} endpoints got no "
            f"answer from the worker processes ({'; '.join(failures) or 'a worker died'}); "
            "rerun with --workers 1 to scan in one process"
        )
    return [shown[i] for i in range(len(endpoints))]


def _worker(
    fd: int,
    share: list[Endpoint],
    indexes: list[int],
    trust: TrustStore,
    concurrency: int,
    probe_timeout: float,
    as_json: bool,
) -> int:
    """One worker: probe its share, report each probe as it ends, then send the share
    rendered, each with its index in the whole scan; the exit code."""
    import pickle  # noqa: PLC0415 - only with workers: a small scan starts without it

    with os.fdopen(fd, "wb") as out:

        def send(record: tuple[object, ...]) -> None:
            data = pickle.dumps(record, pickle.HIGHEST_PROTOCOL)
            out.write(_RECORD.pack(len(data)) + data)
            out.flush()

        position = {id(ep): i for ep, i in zip(share, indexes, strict=True)}
        try:
            observations = asyncio.run(
                scan(
                    share,
                    trust,
                    concurrency=concurrency,
                    probe_timeout=probe_timeout,
                    on_done=lambda obs: send(("tick", position[id(obs.endpoint)], _mark(obs))),
                )
            )
            now = datetime.now(UTC)
            rendered = [show(o, now, as_json) for o in observations]
            send(("shown", list(zip(indexes, rendered, strict=True))))
        except Exception as exc:  # the parent names it; a traceback would interleave
            send(("error", f"{type(exc).__name__}: {exc}"))
            return 1
    return 0


def _records(fds: list[int]) -> Iterator[tuple[Any, ...]]:
    """The records the workers write on their pipes, until every pipe is closed."""
    import pickle  # noqa: PLC0415 - only with workers: a small scan starts without it

    pending = {fd: b"" for fd in fds}
    with selectors.DefaultSelector() as selector:
        for fd in fds:
            selector.register(fd, selectors.EVENT_READ)
        while pending:
            for key, _ in selector.select():
                fd = int(key.fd)
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    selector.unregister(fd)
                    del pending[fd]
                    continue
                buffer = pending[fd] + chunk
                while len(buffer) >= _RECORD.size:
                    (size,) = _RECORD.unpack_from(buffer)
                    if len(buffer) < _RECORD.size + size:
                        break
                    record = buffer[_RECORD.size : _RECORD.size + size]
                    buffer = buffer[_RECORD.size + size :]
                    yield pickle.loads(record)  # noqa: S301 - our forked child's pipe
                pending[fd] = buffer


def run(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise ConfigError("scan: --concurrency must be at least 1")
    if args.timeout <= 0:
        raise ConfigError("scan: --timeout must be positive")
    if args.workers < 0:
        raise ConfigError("scan: --workers must be 0 (one per CPU) or more")
    endpoints = [parse_endpoint(e, args.starttls) for e in args.endpoints]
    for path in args.ca_file:
        if not path.is_file():
            raise ConfigError(f"scan: --ca-file {path} does not exist")
    trust = TrustStore(args.ca_file, system_roots=args.system_roots or not args.ca_file)
    show_progress = args.progress
    if show_progress is None:
        show_progress = sys.stderr.isatty() and len(endpoints) > 3
    workers = args.workers or auto_workers(len(endpoints), args.concurrency)  # 0: automatic
    shown = scan_in_workers(
        endpoints,
        trust,
        workers=workers,
        concurrency=args.concurrency,
        probe_timeout=args.timeout,
        progress=sys.stderr if show_progress else None,
        as_json=args.json,
    )
    if args.json:
        # as json.dumps(..., indent=2) of the whole array, written in one piece
        body = ",\n".join(item.text for item in shown)
        sys.stdout.write(f"[\n{body}\n]\n" if shown else "[]\n")
    else:
        sys.stdout.write("".join(item.text for item in shown))
        failed = sum(item.failed for item in shown)
        unverified = sum(item.unverified for item in shown)
        expiring = sum(item.expiring for item in shown)
        print(
            f"{len(shown)} endpoints: {len(shown) - failed} answered, {failed} failed, "
            f"{unverified} chain not verified, {expiring} expiring within 30 days"
        )
    bad = any(item.failed or item.unverified for item in shown)
    return 1 if bad else 0
