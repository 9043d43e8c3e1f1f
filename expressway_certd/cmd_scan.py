"""`expressway-certd scan HOST[:PORT] ...`: what each endpoint serves, in the words of Cisco's
step A ("Show (decoded)"), for many hosts at once; `--json` for scripts."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from expressway_certd.monitor.endpoint import SERVICE_BY_PORT, Endpoint
from expressway_certd.monitor.errors import ConfigError
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


async def scan(
    endpoints: list[Endpoint],
    trust: TrustStore,
    *,
    concurrency: int,
    probe_timeout: float,
    progress: TextIO | None,
) -> list[Observation]:
    prober = Prober(trust, concurrency=concurrency, timeout=probe_timeout)
    done = 0
    total = len(endpoints)

    def tick(obs: Observation) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            mark = "ok" if obs.ok else obs.error_class
            progress.write(f"\r[{done}/{total}] {printable(obs.endpoint.address)} {mark}\033[K")
            if done == total:
                progress.write("\n")
            progress.flush()

    return await prober.probe_many([("scan", ep) for ep in endpoints], on_done=tick)


def run(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise ConfigError("scan: --concurrency must be at least 1")
    if args.timeout <= 0:
        raise ConfigError("scan: --timeout must be positive")
    endpoints = [parse_endpoint(e, args.starttls) for e in args.endpoints]
    for path in args.ca_file:
        if not path.is_file():
            raise ConfigError(f"scan: --ca-file {path} does not exist")
    trust = TrustStore(args.ca_file, system_roots=args.system_roots or not args.ca_file)
    show_progress = args.progress
    if show_progress is None:
        show_progress = sys.stderr.isatty() and len(endpoints) > 3
    observations = asyncio.run(
        scan(
            endpoints,
            trust,
            concurrency=args.concurrency,
            probe_timeout=args.timeout,
            progress=sys.stderr if show_progress else None,
        )
    )
    now = datetime.now(UTC)
    if args.json:
        json.dump([observation_json(o, now) for o in observations], sys.stdout, indent=2)
        print()
    else:
        for obs in observations:
            render_text(obs, now, sys.stdout)
        failed = sum(1 for o in observations if not o.ok)
        unverified = sum(1 for o in observations if o.ok and not o.chain_verified)
        expiring = sum(1 for o in observations if o.facts and o.facts.days_left(now) < 30)
        print(
            f"{len(observations)} endpoints: {len(observations) - failed} answered, {failed} failed, "
            f"{unverified} chain not verified, {expiring} expiring within 30 days"
        )
    bad = any(not o.ok or not o.chain_verified for o in observations)
    return 1 if bad else 0
