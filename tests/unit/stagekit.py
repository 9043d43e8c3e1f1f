"""What the stage unit tests share: a lab PKI (the CA of the certificate installed today and a
new CA with an intermediate), a configuration with a traversal pair, the E's cluster peer, an
unrelated box and a Unified CM, and a `Context` built from fakes (tests/unit/fakes.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from expressway_certd_lab.pki import CA

from expressway_certd.config import load_config
from expressway_certd.monitor.config import Config
from expressway_certd.monitor.facts import cert_pem, facts_from_x509
from expressway_certd.renewers.pipeline import Context, IssuedCert, RenewalRecord, Snapshot
from expressway_certd.renewers.validate import Plan
from tests.unit.fakes import FakeCA, FakeDevices, FakeExpressway, FakeProber

SANS = ("e1.example.com",)
PLAN = Plan(
    target="e1", role="c", version="X15.4", sans=SANS,
    required_eku=("1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"),
)  # fmt: skip


@dataclass(frozen=True)
class Pki:
    old: CA  # issued the certificate installed today (a root)
    new_root: CA
    new: CA  # intermediate under new_root: issues the renewed certificate when the CA changes
    current: x509.Certificate  # installed today, by `old`
    key: rsa.RSAPrivateKey  # the key the box holds for the CSR
    csr: x509.CertificateSigningRequest

    def leaf(self, ca: CA, sans: tuple[str, ...] = SANS, **kw: Any) -> x509.Certificate:
        """A certificate for the CSR's key, issued by `ca`."""
        cert, _ = ca.issue(sans[0], list(sans), public_key=self.csr.public_key(), **kw)
        return cert


def make_pki() -> Pki:
    old = CA.create("Old Root CA")
    new_root = CA.create("New Root CA")
    new = CA.create("New Issuing CA", parent=new_root)
    current, _ = old.issue("e1.example.com", ["e1.example.com"])
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, SANS[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in SANS]), False)
        .sign(key, hashes.SHA256())
    )
    return Pki(old, new_root, new, current, key, csr)


def write_pem(path: Path, *certs: x509.Certificate) -> Path:
    path.write_text("".join(cert_pem(c) for c in certs))
    return path


def stage_config(
    tmp_path: Path,
    pki: Pki,
    *,
    window: str | None = None,
    ucm_window: str | None = None,
    pinned: bool = True,
    verify_timeout: str = "10m",
    approval: str = "auto",
    ucm_extra: str = "",
) -> Config:
    """e1 (C) renews with CA `portal`; e2 (E) is its traversal peer, e3 a cluster peer of e2;
    `other` is unrelated; Unified CM `cm` has nodes pub and sub. `pinned`: the new root is
    pinned for the CA (trust_anchors); `ucm_extra`: more keys of the Unified CM's table."""
    secret = tmp_path / "pw"
    secret.write_text("pw")
    secret.chmod(0o600)
    creds = f'username = "admin"\npassword = "file:{secret}"\n'
    renewal = f'ca = "portal", approval = "{approval}", verify_timeout = "{verify_timeout}"'
    if window:
        renewal += f", maintenance_window = {window}"
    anchors = write_pem(tmp_path / "new-root.pem", pki.new_root.cert)
    path = tmp_path / "certd.toml"
    path.write_text(
        f'[daemon]\nstate = "{tmp_path / "s.db"}"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[[expressway]]\nname = "e1"\naddress = "e1.example.com"\nrole = "c"\n{creds}'
        f'traversal_peer = "e2"\nunified_cm = "cm"\nrenewal = {{ {renewal} }}\n'
        f'[[expressway]]\nname = "e2"\naddress = "e2.example.com"\nrole = "e"\n{creds}'
        'cluster = "e.example.com"\ntraversal_peer = "e1"\n'
        f'[[expressway]]\nname = "e3"\naddress = "e3.example.com"\nrole = "e"\n{creds}'
        'cluster = "e.example.com"\n'
        f'[[expressway]]\nname = "other"\naddress = "other.example.com"\nrole = "e"\n{creds}'
        f'[[unified_cm]]\nname = "cm"\nnodes = ["pub", "sub"]\n{creds}'
        + (f"maintenance_window = {ucm_window}\n" if ucm_window else "")
        + ucm_extra
        + '[ca.portal]\nkind = "manual"\n'
        + (f'trust_anchors = "{anchors}"\n' if pinned else "")
    )
    return load_config(path)


def issued_record(
    pki: Pki, leaf: x509.Certificate, chain: list[x509.Certificate], **changes: Any
) -> RenewalRecord:
    """A record as the submit stage leaves it, with the snapshot of today's certificate."""
    return RenewalRecord(
        snapshot=snapshot_of(pki.current),
        plan=PLAN,
        csr_pem=pki.csr.public_bytes(serialization.Encoding.PEM).decode(),
        issued=IssuedCert(leaf_pem=cert_pem(leaf), chain_pem="".join(cert_pem(c) for c in chain)),
        **changes,
    )


def snapshot_of(cert: x509.Certificate, role: str = "c", zones: tuple[Any, ...] = ()) -> Snapshot:
    facts = facts_from_x509(cert)
    return Snapshot(
        version="X15.4", role=role, cert_pem=cert_pem(cert), sha256=facts.sha256,
        aki=facts.aki, issuer=facts.issuer, not_after=facts.not_after.isoformat(),
        sans=tuple(str(s) for s in facts.sans), zones=zones, acme_scheduler=False,
    )  # fmt: skip


def make_context(
    cfg: Config,
    record: RenewalRecord,
    *,
    devices: FakeDevices | None = None,
    ca: FakeCA | None = None,
    prober: FakeProber | None = None,
    now: datetime | None = None,
    target: str = "e1",
    attempts: int = 0,
    **kw: Any,
) -> Context:
    at = now or datetime.now(UTC)
    return Context(
        renewal_id="r1", target=cfg.target(target), config=cfg,
        devices=devices or FakeDevices(FakeExpressway()), ca=ca or FakeCA(), ca_name="portal",
        prober=prober or FakeProber(), now=lambda: at, record=record, attempts=attempts, **kw,
    )  # fmt: skip
