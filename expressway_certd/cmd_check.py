"""`check-cert` (Cisco's steps C and D for a hand-obtained certificate) and `decode` (a file
shown as the Expressway's "Show (decoded)").

    expressway-certd check-cert NEW.pem --against TARGET --config F [--csr FILE] [--json]
    expressway-certd check-cert NEW.pem --against OLD.pem --version X15.4 --role e --csr CSR
    expressway-certd decode FILE [--json]

`check-cert` exits 0 only when the certificate is safe to install, 1 when it is not, 2 on an
error (unreadable file, unreachable box). Against a TARGET it reads the box read-only: the
installed certificate, the pending CSR, the zones and the trusted CA lists of every box that
must trust a new CA (and, for an Expressway-C, each Unified CM node's trust stores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from expressway_certd.config import load_config
from expressway_certd.monitor.config import Config, ExpresswayConfig
from expressway_certd.monitor.errors import CertParseError, ConfigError
from expressway_certd.monitor.facts import cert_pem, facts_from_x509, facts_json, load_certificates
from expressway_certd.monitor.text import printable
from expressway_certd.renewers.decode import Decoded, read_file_bytes, render
from expressway_certd.renewers.expressway import OperationUnsupported
from expressway_certd.renewers.handcheck import (
    EXPRESSWAY_STORE_LABEL,
    HandCheck,
    Situation,
    TrustHolder,
    check_hand_cert,
    fingerprint,
    offline_holders,
)
from expressway_certd.renewers.pipeline import ConfiguredDevices, Devices, trust_boxes, zone_kinds

EXIT_SAFE, EXIT_UNSAFE = 0, 1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "check-cert",
        help="check a hand-obtained certificate before installing it (Cisco steps C and D)",
        description=(
            "Check a certificate obtained by hand: SANs against the current certificate, EKU "
            "for the version and role, key usage, the key against the pending CSR, chain "
            "completeness, and when the issuer changed the exact trust uploads. Exit 0 only "
            "when it is safe to install, 1 when it is not, 2 on errors."
        ),
    )
    p.add_argument("certificate", help="the new certificate (PEM or DER; a PEM may hold its chain)")
    p.add_argument(
        "--against",
        required=True,
        help="an [[expressway]] name (needs --config) or the current certificate file (offline)",
    )
    p.add_argument("--config", help="TOML config file (when --against names a target)")
    p.add_argument("--version", help="offline: the box's version, e.g. X15.4")
    p.add_argument("--role", choices=("c", "e"), help="offline: Expressway-C or -E")
    p.add_argument("--csr", help="the pending CSR as a file (offline; overrides the box's)")
    p.add_argument(
        "--server-eku-upload",
        type=_on_off,
        help="offline, X15.4 E: the value of xConfiguration XCP TLS Certificate CVS "
        "EnableServerEkuUpload (on/off); unknown keeps both EKUs required",
    )
    p.add_argument(
        "--peer-version",
        help="offline, X15.4 E: the traversal peer's version (serverAuth-only needs the same)",
    )
    p.add_argument(
        "--chain", action="append", default=[], help="file of CA certificates (repeatable)"
    )
    p.add_argument("--cluster-fqdn", help="offline: the cluster FQDN every peer cert must carry")
    p.add_argument("--extra-san", action="append", default=[], help="offline: a SAN to add")
    p.add_argument("--ca-dir", help="write the CA certificates to upload into this directory")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request deadline, seconds")
    p.set_defaults(func=run_check)

    d = subparsers.add_parser(
        "decode",
        help="show a certificate, chain, CSR or PKCS#7 file as the Expressway decodes it",
        description=(
            "Print a certificate, PEM chain, CSR or PKCS#7 bundle (PEM or DER) in OpenSSL's "
            "text layout, as the Expressway's 'Show (decoded)' does, with the facts "
            "expressway-certd compares. Never reads private keys."
        ),
    )
    d.add_argument("file", help="the file to decode")
    d.add_argument("--json", action="store_true", help="print one JSON object")
    d.set_defaults(func=run_decode)


# --- decode ---------------------------------------------------------------------------------


def _on_off(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, not {value!r}")
    return lowered == "on"


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CertParseError(f"{path}: cannot read the {what} ({exc.strerror})") from exc


def decoded_json(decoded: Decoded, now: datetime) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": decoded.kind, "certificates": []}
    for cert in decoded.certificates:
        facts = facts_from_x509(cert)
        out["certificates"].append(
            facts_json(facts)
            | {
                "days_left": round(facts.days_left(now), 2),
                "is_ca": facts.is_ca,
                "public_key_sha256": facts.public_key_sha256,
            }
        )
    if decoded.csr is not None:
        csr = decoded.csr
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)]
        except x509.ExtensionNotFound:
            sans = []
        out["csr"] = {
            "subject": csr.subject.rfc4514_string(),
            "sans": sans,
            "signature_valid": csr.is_signature_valid,
        }
    return out


def run_decode(args: argparse.Namespace) -> int:
    decoded = read_file_bytes(_read(args.file, "file"), source=args.file)
    now = datetime.now(UTC)
    if args.json:
        print(json.dumps(decoded_json(decoded, now), indent=2))
    else:
        print(render(decoded, now))
    return 0


# --- check-cert -----------------------------------------------------------------------------


def _load_csr(path: str) -> x509.CertificateSigningRequest:
    data = _read(path, "CSR")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise CertParseError(
            f"{path}: not a readable CSR ({exc}); download it from the box again"
        ) from exc


def _trust_bundle(config: Config) -> tuple[x509.Certificate, ...]:
    bundle = config.daemon.trust_bundle
    if bundle is None:
        return ()
    return tuple(load_certificates(_read(str(bundle), "trust bundle"), source=str(bundle)))


async def gather(
    config: Config,
    target: ExpresswayConfig,
    devices: Devices,
    csr: x509.CertificateSigningRequest | None,
) -> Situation:
    """Read-only: what the box and its TLS peers hold (steps A and D)."""
    async with devices.expressway(target) as box:
        info = await box.system_info()
        current = await box.server_certificate()
        pending = csr if csr is not None else await box.pending_csr()
        try:
            zones = list(await box.zones())
        except OperationUnsupported:
            zones = []
        role = target.role or info.role
        server_eku_upload = await box.server_eku_upload_if_relevant(role)
    peer_version: str | None = None
    if target.traversal_peer:
        async with devices.expressway(config.target(target.traversal_peer)) as peer:
            peer_version = (await peer.system_info()).version
    holders: list[TrustHolder] = []
    known: list[x509.Certificate] = []
    for box_cfg in trust_boxes(config, target):
        async with devices.expressway(box_cfg) as other:
            trusted = tuple(await other.trusted_cas())
        if box_cfg.name == target.name:
            known += trusted
            why = "this Expressway (its own chain)"
        else:
            why = "traversal zone peer"
        holders.append(TrustHolder(box_cfg.name, EXPRESSWAY_STORE_LABEL, trusted, why=why))
    if role == "c" and target.unified_cm:
        ucm = config.unified_cm(target.unified_cm)
        async with devices.unified_cm(ucm) as cm:
            for node in ucm.nodes:
                for store in ucm.trust_stores:
                    trusted = tuple(await cm.trusted(node, store))
                    holders.append(
                        TrustHolder(
                            f"{ucm.name}/{node}",
                            f"{store}-trust",
                            trusted,
                            restart=", ".join(ucm.restart_services),
                            why="SIP TLS and HTTPS between the Expressway-C and Unified CM",
                        )
                    )
    return Situation(
        target=target.name,
        role=role,
        version=info.version or target.version,
        current=current,
        pending_csr=pending,
        zones=tuple(zone_kinds(role, zones)),
        cluster_fqdn=target.cluster,
        extra_sans=target.renewal.extra_sans if target.renewal else (),
        anchors=_trust_bundle(config),
        known_cas=tuple(known),
        holders=tuple(holders),
        csr_source="the CSR file" if csr is not None else f"the box {target.name}",
        server_eku_upload=server_eku_upload,
        peer_version=peer_version,
    )


def offline_situation(
    args: argparse.Namespace, csr: x509.CertificateSigningRequest | None
) -> Situation:
    if not args.version or not args.role:
        raise ConfigError(
            f"check-cert --against {args.against}: checking against a certificate file needs "
            "--version (e.g. X15.4) and --role (c or e): the EKU rules depend on both"
        )
    current = load_certificates(_read(args.against, "current certificate"), source=args.against)
    name = current[0].subject.rfc4514_string()
    return Situation(
        target=printable(name),
        role=args.role,
        version=args.version,
        current=current[0],
        pending_csr=csr,
        cluster_fqdn=args.cluster_fqdn,
        extra_sans=tuple(args.extra_san),
        known_cas=tuple(current[1:]),
        holders=offline_holders("this Expressway", args.role),
        csr_source="the CSR file" if csr is not None else "no CSR was given: this check",
        server_eku_upload=args.server_eku_upload,
        peer_version=args.peer_version,
    )


def _file_name(index: int, cert: x509.Certificate) -> str:
    cn = facts_from_x509(cert).common_name or "ca"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", cn).strip("-.") or "ca"
    return f"{index:02d}-{stem[:60]}.pem"


def write_ca_files(directory: Path, result: HandCheck) -> dict[str, Path]:
    """Each CA certificate that must be uploaded, as its own PEM file; fingerprint -> path."""
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for i, cert in enumerate(result.path[1:], start=1):
        path = directory / _file_name(i, cert)
        path.write_bytes(cert_pem(cert).encode())
        out[fingerprint(cert)] = path
    return out


def _cert_ref(cert: x509.Certificate, files: dict[str, Path]) -> dict[str, Any]:
    fp = fingerprint(cert)
    return {
        "subject": cert.subject.rfc4514_string(),
        "sha256": fp,
        "file": str(files[fp]) if fp in files else None,
    }


def result_json(result: HandCheck, files: dict[str, Path]) -> dict[str, Any]:
    return {
        "target": result.target,
        "safe": result.safe,
        "checks": [
            {
                "check": r.name,
                "ok": r.problem is None,
                "problem": r.problem.check if r.problem else None,
                "message": r.problem.message if r.problem else None,
            }
            for r in result.results
        ],
        "issuer_changed": result.issuer_changed,
        "chain": [_cert_ref(c, files) for c in result.path],
        "trust_uploads": [
            {
                "where": u.where,
                "store": u.store,
                "certificates": [_cert_ref(c, files) for c in u.certificates],
                "restart": u.restart or None,
                "why": u.why,
            }
            for u in result.uploads
        ],
    }


def render_result(result: HandCheck, files: dict[str, Path]) -> str:
    lines = [f"check-cert for {printable(result.target)}:"]
    for r in result.results:
        if r.problem is None:
            lines.append(f"  ok    {r.name}")
        else:
            lines.append(f"  FAIL  {r.name}: {printable(r.problem.message)}")
    lines.append("Chain:")
    for i, cert in enumerate(result.path):
        lines.append(f"  #{i} {printable(cert.subject.rfc4514_string())}")
    if not result.issuer_changed:
        lines.append("Issuer unchanged (same Authority Key Identifier): no trust uploads needed.")
    elif not result.uploads:
        lines.append("Issuer changed; every verifier already trusts the new CA certificates.")
    else:
        lines.append("Issuer changed: upload BEFORE installing the new certificate (step D):")
        for n, u in enumerate(result.uploads, start=1):
            lines.append(f"  {n}. {printable(u.where)}: {u.store} ({u.why})")
            for cert in u.certificates:
                ref = _cert_ref(cert, files)
                where = f" file {ref['file']}" if ref["file"] else ""
                lines.append(
                    f"       + {printable(ref['subject'])} (SHA-256 {ref['sha256'][:16]}){where}"
                )
            if u.restart:
                lines.append(f"     then restart: {u.restart}")
    if result.safe:
        lines.append(
            f"SAFE to install: upload the server certificate only (not the chain) on "
            f"{printable(result.target)}, then restart it (step E)."
        )
    else:
        lines.append(f"NOT safe to install: {len(result.problems)} problem(s) above.")
    return "\n".join(lines)


def run_check(args: argparse.Namespace) -> int:
    certs = load_certificates(_read(args.certificate, "certificate"), source=args.certificate)
    leaf, supplied = certs[0], list(certs[1:])
    for extra in args.chain:
        supplied += load_certificates(_read(extra, "chain"), source=extra)
    csr = _load_csr(args.csr) if args.csr else None
    if Path(args.against).is_file():
        situation = offline_situation(args, csr)
    else:
        if not args.config:
            raise ConfigError(
                f"check-cert --against {args.against}: no such file; to check against a "
                "configured Expressway pass --config"
            )
        config = load_config(args.config)
        target = config.target(args.against)
        devices = ConfiguredDevices({"timeout": args.timeout})
        situation = asyncio.run(gather(config, target, devices, csr))
    result = check_hand_cert(leaf, supplied, situation, datetime.now(UTC))
    files = write_ca_files(Path(args.ca_dir), result) if args.ca_dir else {}
    if args.json:
        print(json.dumps(result_json(result, files), indent=2))
    else:
        print(render_result(result, files))
    return EXIT_SAFE if result.safe else EXIT_UNSAFE
