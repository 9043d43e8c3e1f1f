"""The lab side of bench_storm, in its own process: N simulated Expressway-Es (lab.expressway,
REST API and one TLS listener each, certificates from one lab CA that expire in `--days`) and
the lab EST CA (lab.est), which logs every enrollment request as the CA sees it. The CA takes
`--ca-delay` seconds to issue (202 + Retry-After until then, as an EST CA with manual approval
answers), so an order stays open across several requests as it does at a real CA.

Each E has a traversal zone (lab.zones) to one Expressway-C that the config does not list (the
core side of the fleet, not renewed here) and that already trusts the EST CA: the verify stage
reads an Active zone on every box, and no trust push is needed.

RSA keys come from a shared pool (`lab.pki.share_rsa_keys`): each box still signs its own CSR
and every certificate is issued anew, but 1,000 boxes do not make 3,000 RSA keys.

Prints one JSON line when ready (boxes, CA bundle, EST url, anchor and password). Then reads
stdin: `stats` prints one JSON line with the CA's log (per enrollment: arrival, answer, HTTP
status, distinct CSR) and the boxes' counters; EOF ends the process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from expressway_certd_lab.est import ESTSimulator
from expressway_certd_lab.expressway import ExpresswaySim
from expressway_certd_lab.pki import CA, cert_pem, share_rsa_keys
from expressway_certd_lab.zones import expressway_needs_client_auth, traversal_zone

DOMAIN = "storm.example"
PASSWORD = "storm-admin-password"


def box_name(index: int) -> str:
    return f"st{index:05d}"


@dataclass
class CountingEST(ESTSimulator):
    """The lab EST CA in its manual-approval mode (202 + Retry-After until approved), where an
    operator approves each request `delay` seconds after it first arrived; with the time, the
    answer and the CSR of every enrollment request it served, so orders can be told apart."""

    delay: float = 5.0
    log: list[tuple[float, float, int, str]] = field(default_factory=list)
    first_seen: dict[str, float] = field(default_factory=dict)

    async def _enroll(self, request: web.Request) -> web.Response:
        arrived = time.time()
        for key, req in self.requests.items():  # the operator, before the CA answers
            if not req.approved and arrived - self.first_seen[key] >= self.delay:
                req.approved = True
        response = await super()._enroll(request)
        try:  # which CSR (as the CA keys them); aiohttp keeps the body it read
            der = base64.b64decode(b"".join((await request.read()).split()))
            key = hashlib.sha256(
                x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.DER)
            ).hexdigest()
        except ValueError:
            key = ""
        self.first_seen.setdefault(key, arrived)
        self.log.append((arrived, time.time(), response.status, key))
        return response


@dataclass
class CorePeer:
    """The Expressway-C at the other end of every E's traversal zone (lab.zones.TlsParty)."""

    cert: x509.Certificate
    trusted: list[x509.Certificate]
    name: str = "core-c"
    version: str = "X15.4"
    reachable: bool = True

    @property
    def served_cert(self) -> x509.Certificate:
        return self.cert

    @property
    def client_cert(self) -> x509.Certificate:
        return self.cert

    @property
    def zone_trust(self) -> list[x509.Certificate]:
        return self.trusted

    def needs_client_auth(self) -> bool:
        return expressway_needs_client_auth(self.version, "c", True)


async def _serve(args: argparse.Namespace) -> None:
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    share_rsa_keys(args.keys)
    ca = CA.create("Storm Lab Root CA")
    bundle = ca.write_bundle(directory / "lab-ca.pem")
    est = CountingEST(manual_approval=True, retry_after=1, delay=args.ca_delay)
    est.start()
    core = CorePeer(ca.issue(f"core-c.{DOMAIN}")[0], [*ca.chain(), est.root.cert, est.issuing.cert])
    boxes = []
    for i in range(args.targets):
        name = box_name(i)
        sim = ExpresswaySim(
            name,
            role="e",
            version="X15.4",
            ca=ca,
            fqdn=f"{name}.{DOMAIN}",
            listener_modes=("tls",),
            ssh_port=None,
            password=PASSWORD,
            restart_seconds=args.restart_seconds,
            cert_days=args.days,
            workdir=directory / name,
        )
        sim.add_zone(traversal_zone(f"Traversal {name}", core, sim), core.name)
        await sim.start()
        boxes.append(sim)
    info: dict[str, Any] = {
        "boxes": [
            {"name": b.name, "api_port": b.api_port, "port": int(b.listeners[0].rpartition(":")[2])}
            for b in boxes
        ],
        "bundle": str(bundle),
        "password": PASSWORD,
        "est": {"url": est.url, "anchor": str(est.trust_anchor), "password": est.users["est"]},
        "est_root": cert_pem(est.root.cert).decode(),
    }
    print(json.dumps(info), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        if line.strip() == "stats":
            stats = {
                "enrollments": est.log,
                "distinct_csrs": est.submissions,
                "csrs_generated": sum(b.csr_generated for b in boxes),
                "uploads": sum(b.uploads for b in boxes),
                "restarts": sum(b.restart_count for b in boxes),
            }
            print(json.dumps(stats), flush=True)
    os._exit(0)  # tearing down 1,000 boxes one by one only takes time


def main_child(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--targets", type=int, required=True)
    parser.add_argument("--days", type=float, default=10.0, help="life left on the boxes' certs")
    parser.add_argument("--keys", type=int, default=32, help="RSA keys in the shared pool")
    parser.add_argument("--restart-seconds", type=float, default=0.5)
    parser.add_argument("--ca-delay", type=float, default=5.0, help="seconds until approval")
    args = parser.parse_args(argv)
    os.umask(0o077)
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main_child()
