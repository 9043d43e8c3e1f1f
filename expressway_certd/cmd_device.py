"""`expressway-certd inspect TARGET --config F [--json]`: what the Expressway client reads from
one box: version, role, server certificate facts, pending CSR, trusted CAs, peers, zones."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from cryptography import x509

from expressway_certd.config import load_config
from expressway_certd.monitor.facts import facts_from_x509, facts_json
from expressway_certd.monitor.text import printable
from expressway_certd.renewers.expressway import (
    ExpresswayClient,
    ExpresswayClientConfig,
    OperationUnsupported,
    csr_sans,
)

T = TypeVar("T")
ROLE_NAMES = {"c": "Expressway-C", "e": "Expressway-E"}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="show what the API of one Expressway reports",
        description=(
            "Read one configured Expressway through its REST API (read-only): version, role, "
            "server certificate, pending CSR, trusted CA count, cluster peers and zone states."
        ),
    )
    p.add_argument("target", help="name of an [[expressway]] entry")
    p.add_argument("--config", required=True, help="TOML config file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request deadline, seconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    target = config.target(args.target)
    client_config = ExpresswayClientConfig.from_target(target, timeout=args.timeout)
    report = asyncio.run(inspect(client_config, configured_role=target.role))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(args.target, report))
    return 0


async def inspect(
    config: ExpresswayClientConfig, configured_role: str | None = None
) -> dict[str, Any]:
    """Everything `inspect` shows, as the JSON document. Read-only."""
    unsupported: list[str] = []
    async with ExpresswayClient(config) as client:
        info = await client.system_info()
        cert = await client.server_certificate()
        pending = await _optional(client.pending_csr(), "read pending CSR", unsupported)
        trusted = await client.trusted_cas()
        peers = await _optional(client.cluster_peers(), "read cluster peers", unsupported)
        zones = await _optional(client.zones(), "read zone status", unsupported)
    return {
        "target": config.name,
        "name": info.name,
        "version": info.version,
        "role": info.role or configured_role,
        "server_cert": cert_json(cert),
        "pending_csr": csr_json(pending) if pending is not None else None,
        "trusted_ca_count": len(trusted),
        "peers": peers or [],
        "zones": [
            {"name": z.name, "type": z.kind, "state": z.state, "reason": z.reason}
            for z in zones or []
        ],
        "unsupported": unsupported,
    }


async def _optional(call: Awaitable[T], operation: str, unsupported: list[str]) -> T | None:
    try:
        return await call
    except OperationUnsupported:
        unsupported.append(operation)
        return None


def cert_json(cert: x509.Certificate) -> dict[str, Any]:
    return facts_json(facts_from_x509(cert))


def csr_json(csr: x509.CertificateSigningRequest) -> dict[str, Any]:
    return {"subject": csr.subject.rfc4514_string(), "sans": csr_sans(csr)}


def render(target: str, report: dict[str, Any]) -> str:
    cert = report["server_cert"]
    role = ROLE_NAMES.get(report["role"] or "", "role unknown")
    lines = [
        f"{target}: {report['name']} ({role}, {report['version']})",
        "Server certificate (installed):",
        f"  Subject     {cert['subject']}",
        f"  Issuer      {cert['issuer']}",
        f"  Not after   {cert['not_after']}",
        f"  SANs        {', '.join(cert['sans']) or '-'}",
        f"  EKU         {', '.join(cert['eku']) or '-'}",
        f"  AKI         {cert['aki'] or '-'}",
        f"  SHA-256     {cert['sha256']}",
    ]
    pending = report["pending_csr"]
    if pending is None:
        lines.append("Pending CSR: none")
    else:
        lines.append(f"Pending CSR: {pending['subject']} ({', '.join(pending['sans'])})")
    lines.append(f"Trusted CA certificates: {report['trusted_ca_count']}")
    lines.append(f"Cluster peers: {', '.join(report['peers']) or '-'}")
    if report["zones"]:
        lines.append("Zones:")
        for zone in report["zones"]:
            reason = f" ({zone['reason']})" if zone["reason"] else ""
            lines.append(f"  {zone['name']:<20} {zone['state']}{reason}")
    for operation in report["unsupported"]:
        lines.append(f"Not offered by this box's API: {operation}")
    return "\n".join(printable(line) for line in lines)
