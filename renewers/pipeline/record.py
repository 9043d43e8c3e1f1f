"""The typed renewal record: what the stages learn and decide, persisted after every stage.

It is stored in the `data` JSON column of the `renewals` table in the same shape as before
it was typed (the keys below, absent when unset), so rows written by earlier versions load
as they are, and `RenewalRecord.from_data(d).to_data() == d` for every row such a version
wrote (tests/unit/test_pipeline_record.py keeps one of each shape). Keys this version does
not know are kept in `extra` and written back unchanged.

    snapshot          Snapshot      stage snapshot: the current certificate, version, role, zones
    plan              Plan          stage preflight: SANs and EKU the new certificate needs
    csr_pem           str           stage csr: the CSR pending on the box
    handle            dict          stage submit/issued: the CA's handle for a pending request
    retry_at          ISO time      stage submit/issued: when to ask the CA again
    pending_reason    str           stage submit/issued: why the CA has not issued
    issued            IssuedCert    stage submit/issued or `provide`: leaf, chain, profile
    ca_changed        bool          stage validate/trust: the new certificate's AKI differs
    trust_cas         [TrustedCa]   stage validate: the CA certificates the trust stage pushes
    approved_by       str           `approve`: who approved
    cucm_restarts     {node: {service: result}}  stage ucm-restart: what already restarted
    installed_sha256  str           stage install: the fingerprint of the uploaded leaf
    verify_deadline   ISO time      stage verify: when waiting for the zones ends
    kind              str           at start: "client" for the X15.5 client certificate;
                                    absent for the server certificate (rows of earlier
                                    versions are server renewals)
    client_restarted  bool          stage restart, kind client: the box restarted after the
                                    upload (the served certificate does not show it)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509

from expressway_certd.monitor.errors import StoreError
from expressway_certd.monitor.store import RenewalRow
from expressway_certd.renewers.expressway import ZoneState
from expressway_certd.renewers.validate import Plan


class RecordError(StoreError):
    """A renewal's stored record does not have the shape this version reads."""


@dataclass(frozen=True)
class Snapshot:
    """Step A: the box as it was before the renewal changed anything."""

    version: str | None = None
    role: str | None = None
    cert_pem: str = ""
    sha256: str = ""
    aki: str | None = None
    issuer: str = ""
    not_after: str = ""  # ISO 8601, as stored
    sans: tuple[str, ...] = ()
    zones: tuple[ZoneState, ...] = ()
    acme_scheduler: bool | None = None
    server_eku_upload: bool | None = None
    peer_version: str | None = None

    def to_data(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["sans"] = list(self.sans)
        data["zones"] = [dataclasses.asdict(z) for z in self.zones]
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Snapshot:
        return cls(
            version=data.get("version"),
            role=data.get("role"),
            cert_pem=data.get("cert_pem", ""),
            sha256=data.get("sha256", ""),
            aki=data.get("aki"),
            issuer=data.get("issuer", ""),
            not_after=data.get("not_after", ""),
            sans=tuple(data.get("sans", ())),
            zones=tuple(ZoneState(**z) for z in data.get("zones", ())),
            acme_scheduler=data.get("acme_scheduler"),
            server_eku_upload=data.get("server_eku_upload"),
            peer_version=data.get("peer_version"),
        )


@dataclass(frozen=True)
class IssuedCert:
    """The certificate at hand for the renewal's CSR (from the CA or handed in)."""

    leaf_pem: str
    chain_pem: str = ""  # concatenated PEM, may be empty
    profile: str | None = None

    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.leaf_pem.encode())

    def chain(self) -> list[x509.Certificate]:
        pem = self.chain_pem
        return list(x509.load_pem_x509_certificates(pem.encode())) if pem else []


@dataclass(frozen=True)
class TrustedCa:
    """A CA certificate the trust stage pushes to every TLS peer."""

    sha256: str
    subject: str


def _plan_from_data(data: Mapping[str, Any]) -> Plan:
    raw = dict(data)
    for key in ("sans", "required_eku", "zones", "notes"):
        raw[key] = tuple(raw.get(key, ()))
    return Plan(**raw)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


KNOWN_KEYS = (
    "snapshot", "plan", "csr_pem", "handle", "retry_at", "pending_reason", "issued",
    "ca_changed", "trust_cas", "approved_by", "cucm_restarts", "installed_sha256",
    "verify_deadline", "kind", "client_restarted",
)  # fmt: skip

SERVER = "server"  # the server certificate (every renewal before X15.5's client store)
CLIENT = "client"  # the X15.5 client certificate
KINDS = (SERVER, CLIENT)


def kind_of(row: RenewalRow) -> str:
    """Which certificate a stored renewal renews ("server" for rows without a kind)."""
    return row.kind


def check_kind(kind: str) -> str:
    """`kind` if it is one this version renews; ValueError naming the known ones otherwise."""
    if kind not in KINDS:
        raise ValueError(f"unknown renewal kind {kind!r}; known: {', '.join(KINDS)}")
    return kind


@dataclass(frozen=True)
class RenewalRecord:
    """Everything the stages of one renewal have learnt so far (see the module docstring)."""

    snapshot: Snapshot | None = None
    plan: Plan | None = None
    csr_pem: str | None = None
    handle: Mapping[str, Any] | None = None
    retry_at: datetime | None = None
    pending_reason: str | None = None
    issued: IssuedCert | None = None
    ca_changed: bool | None = None
    trust_cas: tuple[TrustedCa, ...] | None = None
    approved_by: str | None = None
    # (node, service) -> result, in the order they restarted
    cucm_restarts: tuple[tuple[str, str, str], ...] | None = None
    installed_sha256: str | None = None
    verify_deadline: datetime | None = None
    kind: str = SERVER
    client_restarted: bool | None = None  # kind client: restarted after the upload
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys of a newer version

    def restarted(self, node: str) -> dict[str, str]:
        """The services already restarted on `node`, with their results."""
        return {s: r for n, s, r in self.cucm_restarts or () if n == node}

    def with_restart(self, node: str, service: str, result: str) -> RenewalRecord:
        return dataclasses.replace(
            self, cucm_restarts=(*(self.cucm_restarts or ()), (node, service, result))
        )

    def to_data(self) -> dict[str, Any]:
        """The JSON-ready dict stored in the `data` column; unset fields are left out."""
        data: dict[str, Any] = {}
        if self.snapshot is not None:
            data["snapshot"] = self.snapshot.to_data()
        if self.plan is not None:
            plan = dataclasses.asdict(self.plan)
            data["plan"] = {k: list(v) if isinstance(v, tuple) else v for k, v in plan.items()}
        if self.csr_pem is not None:
            data["csr_pem"] = self.csr_pem
        if self.handle is not None:
            data["handle"] = dict(self.handle)
        if self.retry_at is not None:
            data["retry_at"] = self.retry_at.isoformat()
        if self.pending_reason is not None:
            data["pending_reason"] = self.pending_reason
        if self.issued is not None:
            data["issued"] = dataclasses.asdict(self.issued)
        if self.ca_changed is not None:
            data["ca_changed"] = self.ca_changed
        if self.trust_cas is not None:
            data["trust_cas"] = [dataclasses.asdict(c) for c in self.trust_cas]
        if self.approved_by is not None:
            data["approved_by"] = self.approved_by
        if self.cucm_restarts is not None:
            restarts: dict[str, dict[str, str]] = {}
            for node, service, result in self.cucm_restarts:
                restarts.setdefault(node, {})[service] = result
            data["cucm_restarts"] = restarts
        if self.installed_sha256 is not None:
            data["installed_sha256"] = self.installed_sha256
        if self.verify_deadline is not None:
            data["verify_deadline"] = self.verify_deadline.isoformat()
        if self.kind != SERVER:
            data["kind"] = self.kind
        if self.client_restarted is not None:
            data["client_restarted"] = self.client_restarted
        data.update(self.extra)
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> RenewalRecord:
        """Read a stored `data` dict (any version's); RecordError when a known key has the
        wrong shape."""
        try:
            snap, plan, issued = data.get("snapshot"), data.get("plan"), data.get("issued")
            cas = data.get("trust_cas")
            restarts = data.get("cucm_restarts")
            return cls(
                snapshot=Snapshot.from_data(snap) if snap is not None else None,
                plan=_plan_from_data(plan) if plan is not None else None,
                csr_pem=data.get("csr_pem"),
                handle=data.get("handle"),
                retry_at=_time(data.get("retry_at")),
                pending_reason=data.get("pending_reason"),
                issued=IssuedCert(**issued) if issued is not None else None,
                ca_changed=data.get("ca_changed"),
                trust_cas=None if cas is None else tuple(TrustedCa(**c) for c in cas),
                approved_by=data.get("approved_by"),
                cucm_restarts=None
                if restarts is None
                else tuple(
                    (node, service, result)
                    for node, done in restarts.items()
                    for service, result in done.items()
                ),
                installed_sha256=data.get("installed_sha256"),
                verify_deadline=_time(data.get("verify_deadline")),
                kind=check_kind(data.get("kind", SERVER)),
                client_restarted=data.get("client_restarted"),
                extra={k: v for k, v in data.items() if k not in KNOWN_KEYS},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RecordError(
                f"a renewal's stored record does not have the expected shape "
                f"({type(exc).__name__}: {exc}); cancel the renewal ('expressway-certd cancel "
                "ID') and start a new one"
            ) from exc


def record_of(row: RenewalRow) -> RenewalRecord:
    """The typed record of a stored renewal row."""
    try:
        return RenewalRecord.from_data(row.data)
    except RecordError as exc:
        raise RecordError(f"renewal {row.id} ({row.target}): {exc}") from exc
