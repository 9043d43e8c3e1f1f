"""`expressway-certd trust-map --config F [--json] [--svg PATH]`: every TLS relation of the
configured deployment, and whether each verifier trusts what its peer presents.

Reads, read-only, each Expressway's installed server certificate, trusted CA list and (X15.5+)
client certificate, which it presents where it is the TLS client, and each Unified CM node's
trust stores (the same clients as `inspect` and `check-cert`), and the
issued-but-not-installed chains of active renewals from the state database. Prints a table and
writes the picture as SVG with Graphviz `dot` (default `<data_dir>/trust-map.svg`, which the
status page at `/` shows). Exit 0 when every relation is ok, 1 otherwise, 2 on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from expressway_certd.alerts.trust import TRUST_MAP_STATE
from expressway_certd.config import load_config
from expressway_certd.monitor.config import Config
from expressway_certd.monitor.errors import CertdError, ConfigError
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.monitor.statuspage import TRUST_MAP_FILE as SVG_NAME
from expressway_certd.monitor.store import Store
from expressway_certd.monitor.text import printable
from expressway_certd.renewers.pipeline import ConfiguredDevices
from expressway_certd.renewers.trustmap import (
    OK,
    Judgement,
    Party,
    earliest_break,
    relations,
    to_dot,
    trust_map,
)
from expressway_certd.trustmap_live import gather, judgements_json, pending_chains


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "trust-map",
        help="show which TLS relations of the deployment are ok, broken or will break",
        description=(
            "Read every configured Expressway's certificate and trusted CA list and each "
            "Unified CM node's trust stores (read-only), judge every TLS relation (traversal "
            "C<->E, Expressway-C -> Unified CM SIP TLS and HTTPS) and write an SVG picture. "
            "Exit 0 when all are ok, 1 otherwise."
        ),
    )
    p.add_argument("--config", required=True, help="TOML config file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--svg", help=f"write the picture here (default <data_dir>/{SVG_NAME})")
    p.add_argument("--no-svg", action="store_true", help="do not run Graphviz")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request deadline, seconds")
    p.set_defaults(func=run)


async def read_pending(config: Config) -> dict[str, tuple[x509.Certificate, ...]]:
    """Pending renewals' new chains from the state database; none when it cannot be opened."""
    try:
        store = await Store.open(config.daemon.state)
    except CertdError:
        return {}
    try:
        return await pending_chains(store)
    finally:
        await store.close()


def render(judgements: tuple[Judgement, ...], svg: Path | None) -> str:
    lines = [f"{'from':<22} {'to':<22} {'relation':<10} {'store':<12} status"]
    for j in judgements:
        r = j.relation
        row = f"{printable(r.presenter_label):<22} {printable(r.verifier):<22} {r.relation:<10} {r.store:<12} {j.status}"
        if j.reason:
            row += f": {printable(j.reason)}"
        lines.append(row)
    first = earliest_break(judgements)
    lines.append(f"Earliest break: {first:%Y-%m-%d %H:%M} UTC" if first else "Nothing will break.")
    if svg is not None:
        lines.append(f"Picture: {svg}")
    return "\n".join(lines)


def write_svg(dot_source: str, path: Path) -> Path:
    binary = shutil.which("dot")
    if binary is None:
        raise ConfigError(
            "trust-map: Graphviz 'dot' is not installed (Debian package graphviz); "
            "install it or pass --no-svg"
        )
    result = subprocess.run(
        [binary, "-Tsvg"], input=dot_source.encode(), capture_output=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise ConfigError(f"trust-map: dot failed: {result.stderr.decode(errors='replace')[:300]}")
    return save_atomically(path, result.stdout)


def save_atomically(path: Path, data: bytes) -> Path:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    devices = ConfiguredDevices({"timeout": args.timeout})

    async def collect() -> tuple[dict[str, Party], list[tuple[str, str]], list[tuple[str, str]]]:
        prober = Prober(TrustStore([]), concurrency=16, timeout=args.timeout)
        pending = await read_pending(config)
        return await gather(config, devices, pending, {}, args.timeout, prober.probe)

    parties, traversal, unified = asyncio.run(collect())
    now = datetime.now(UTC)
    judgements = trust_map(parties, relations(parties, traversal, unified), now)
    svg: Path | None = None
    if not args.no_svg:
        target = Path(args.svg) if args.svg else config.daemon.data_dir / SVG_NAME
        svg = write_svg(to_dot(parties, judgements), target)
    first = earliest_break(judgements)
    doc = {
        "generated_at": now.isoformat(),
        "relations": judgements_json(judgements),
        "earliest_break": first.isoformat() if first else None,
        "svg": str(svg) if svg else None,
    }
    # The daemon exports this at scrape time (alerts/trust.py).
    save_atomically(config.daemon.data_dir / TRUST_MAP_STATE, json.dumps(doc).encode())
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(render(judgements, svg))
    return 0 if all(j.status == OK for j in judgements) else 1
