"""`expressway-certd sign` (submit a CSR through a configured CA, wait or print the pending
handle) and `expressway-certd ca-check NAME` (reachability, auth and chain of one CA).

`sign` compares the certificate with the CSR: when the CA dropped SANs, EKUs or key usages
it still writes the certificate, names what was dropped on stderr and exits
EXIT_CA_CHANGED unless `--accept-changes`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from expressway_certd.config import load_config
from expressway_certd.monitor.config import Config
from expressway_certd.monitor.config_ca import CAConfig
from expressway_certd.monitor.durations import format_duration, parse_duration, utcnow
from expressway_certd.monitor.errors import CAError, ConfigError
from expressway_certd.monitor.facts import cert_pem
from expressway_certd.monitor.logging import configure_logging
from expressway_certd.renewers.ca import build_connector
from expressway_certd.renewers.ca.base import CAConnector, Issued, Pending, dropped_from

EXIT_PENDING = 3
EXIT_CA_CHANGED = 4
POLL_SLICE = timedelta(seconds=5)


def register(subparsers: Any) -> None:
    sign = subparsers.add_parser(
        "sign",
        help="submit a CSR to a configured CA and write the certificate",
        description=(
            "Submit a CSR (made on the Expressway) through a [ca.NAME] connector and wait for the "
            "certificate. When the CA needs longer (manager approval, --no-wait), the pending "
            f"handle is printed and the exit code is {EXIT_PENDING}; finish later with --resume. "
            "When the certificate lacks SANs, EKUs or key usages the CSR asked for, it is still "
            f"written, stderr names what the CA dropped and the exit code is {EXIT_CA_CHANGED} "
            "unless --accept-changes."
        ),
    )
    sign.add_argument("--config", required=True, help="TOML config file")
    sign.add_argument("--ca", required=True, help="name of the [ca.NAME] table")
    source = sign.add_mutually_exclusive_group(required=True)
    source.add_argument("--csr", type=Path, help="PEM CSR to submit")
    source.add_argument("--resume", type=Path, help="pending handle (JSON) from an earlier run")
    sign.add_argument("--out", type=Path, help="write the leaf certificate here (default: stdout)")
    sign.add_argument("--chain-out", type=Path, help="write the CA chain (PEM) here")
    sign.add_argument("--handle-out", type=Path, help="write the pending handle (JSON) here")
    sign.add_argument("--wait", default="10m", help="how long to wait for issuance (default 10m)")
    sign.add_argument("--no-wait", action="store_true", help="submit once and return")
    sign.add_argument(
        "--accept-changes",
        action="store_true",
        help=f"exit 0 even when the CA dropped SANs, EKUs or key usages (else {EXIT_CA_CHANGED})",
    )
    sign.add_argument(
        "--poll-every",
        help="ask the CA this often while waiting (default: when the CA suggests, at most 1m)",
    )
    sign.add_argument("-v", "--verbose", action="store_true", help="log each CA request result")
    sign.set_defaults(func=run_sign)

    check = subparsers.add_parser(
        "ca-check",
        help="check a configured CA: reachability, authentication, chain",
        description="Check one [ca.NAME]: reach it, authenticate, fetch its chain. Submits nothing.",
    )
    check.add_argument("name", help="name of the [ca.NAME] table")
    check.add_argument("--config", required=True, help="TOML config file")
    check.add_argument("-v", "--verbose", action="store_true", help="log each CA request result")
    check.set_defaults(func=run_check)


def _ca(config: Config, name: str) -> CAConfig:
    ca = config.cas.get(name)
    if ca is None:
        known = ", ".join(config.cas) or "none"
        raise ConfigError(f"{config.path}: no [ca.{name}] table (configured: {known})")
    return ca


def _read_csr(path: Path) -> x509.CertificateSigningRequest:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CAError(f"sign: cannot read {path}: {exc.strerror}") from None
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError:
        try:
            csr = x509.load_der_x509_csr(data)
        except ValueError:
            raise CAError(
                f"sign: {path} is not a PEM or DER CSR; download the CSR from the Expressway "
                "(Maintenance > Security > Server certificate)"
            ) from None
    if not csr.is_signature_valid:
        raise CAError(f"sign: the CSR in {path} has a bad signature; generate it again")
    return csr


def _save_handle(args: argparse.Namespace, pending: Pending) -> None:
    text = json.dumps(pending.handle, indent=2, sort_keys=True)
    if args.handle_out:
        args.handle_out.write_text(text + "\n")
        where = str(args.handle_out)
    else:
        print(text)
        where = "stdout"
    print(
        f"pending: {pending.reason}; ask again after {pending.retry_at:%Y-%m-%d %H:%M:%S}Z; "
        f"handle written to {where}; continue with: expressway-certd sign --config "
        f"{args.config} --ca {args.ca} --resume HANDLE.json",
        file=sys.stderr,
    )


async def _sign(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    ca_config = _ca(config, args.ca)
    budget = timedelta(0) if args.no_wait else parse_duration(args.wait)
    connector: CAConnector = build_connector(
        ca_config, config.daemon.data_dir, wait=min(budget, POLL_SLICE)
    )
    every = parse_duration(args.poll_every).total_seconds() if args.poll_every else 60.0
    started = time.monotonic()
    try:
        csr = None
        if args.resume is not None:
            handle = json.loads(args.resume.read_text())
            result: Issued | Pending = await connector.poll(handle)
        else:
            csr = _read_csr(args.csr)
            result = await connector.submit(csr)
        while isinstance(result, Pending):
            elapsed = time.monotonic() - started
            if elapsed >= budget.total_seconds():
                _save_handle(args, result)
                return EXIT_PENDING
            pause = max(0.5, (result.retry_at - utcnow()).total_seconds())
            pause = min(pause, every, budget.total_seconds() - elapsed)
            print(
                f"waiting for CA {args.ca!r}: {result.reason} "
                f"({format_duration(timedelta(seconds=int(elapsed)))} so far, next check in {pause:.0f}s)",
                file=sys.stderr,
                flush=True,
            )
            await asyncio.sleep(pause)
            result = await connector.poll(result.handle)
    finally:
        await connector.aclose()
    leaf = cert_pem(result.leaf).encode()
    if args.out:
        args.out.write_bytes(leaf)
    else:
        sys.stdout.write(leaf.decode())
    if args.chain_out:
        args.chain_out.write_bytes("".join(cert_pem(c) for c in result.chain).encode())
    print(
        f"issued by CA {args.ca!r}: {result.leaf.subject.rfc4514_string()}, serial "
        f"{result.leaf.serial_number:x}, valid until {result.leaf.not_valid_after_utc:%Y-%m-%d}"
        + (f", profile {result.profile}" if result.profile else ""),
        file=sys.stderr,
    )
    return _report_dropped(args, result, csr)


def _report_dropped(
    args: argparse.Namespace, result: Issued, csr: x509.CertificateSigningRequest | None
) -> int:
    """Say on stderr what the CA left out of the certificate; the exit code for it."""
    dropped = result.dropped
    if dropped is None and csr is not None:
        dropped = dropped_from(csr, result.leaf)
    if dropped is None:
        print(
            f"note: CA {args.ca!r} did not keep the CSR with the pending request, so the "
            "certificate was not compared with it; check its SANs and EKUs before installing",
            file=sys.stderr,
        )
        return 0
    if not dropped:
        return 0
    if not dropped.breaks_service:
        print(
            f"note: CA {args.ca!r} left out of the certificate: {dropped.describe()}",
            file=sys.stderr,
        )
        return 0
    verdict = (
        "accepted (--accept-changes)"
        if args.accept_changes
        else f"exit code {EXIT_CA_CHANGED}; the renewal pipeline would refuse this certificate; "
        "fix the CA's template/profile, or pass --accept-changes to keep it"
    )
    print(
        f"CA {args.ca!r} dropped what the CSR asked for: {dropped.describe()}; the certificate "
        f"was written anyway; {verdict}",
        file=sys.stderr,
    )
    return 0 if args.accept_changes else EXIT_CA_CHANGED


def run_sign(args: argparse.Namespace) -> int:
    configure_logging("info" if args.verbose else "warning", "console")  # stderr: stdout is the PEM
    return asyncio.run(_sign(args))


async def _check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    ca_config = _ca(config, args.name)
    connector = build_connector(ca_config, config.daemon.data_dir)
    print(f"CA {args.name} ({ca_config.kind})")
    ok = True
    try:
        for result in await connector.check():
            ok = ok and result.ok
            print(f"  {'OK  ' if result.ok else 'FAIL'} {result.step}: {result.detail}")
        caps = connector.capabilities()
        ekus = ", ".join(sorted(caps.ekus)) if caps.ekus is not None else "unknown"
        print(
            f"  info profile: {caps.profile or '-'}; EKUs: {ekus}{'; ' + caps.note if caps.note else ''}"
        )
    except CAError as exc:
        print(f"  FAIL {exc}")
        ok = False
    finally:
        await connector.aclose()
    return 0 if ok else 1


def run_check(args: argparse.Namespace) -> int:
    configure_logging("info" if args.verbose else "warning", "console")
    return asyncio.run(_check(args))
