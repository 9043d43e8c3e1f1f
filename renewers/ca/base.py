"""The one interface every CA connector implements, and the types and helpers they share.

A connector takes a PKCS#10 CSR made on the Expressway and returns `Issued` (leaf + chain)
or `Pending` (a JSON-serialisable handle and when to ask again); `poll(handle)` continues a
request, also in a later process. `Issued.dropped` says what the CSR asked for that the CA
left out of the certificate (SANs, EKUs, key usages, subject fields), the same for every
CA kind (`dropped_from`). Errors:

CAError (monitor.errors)
 +-- CARequestError    one request to the CA failed; `reason` labels
                       expressway_ca_errors_total, `retryable` says whether trying later may help
"""

from __future__ import annotations

import contextlib
import os
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol, overload, runtime_checkable

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from expressway_certd.monitor.config import make_private_dir
from expressway_certd.monitor.durations import utcnow
from expressway_certd.monitor.errors import CAError
from expressway_certd.monitor.facts import eku_config_name
from expressway_certd.renewers.ca.metrics import CA_ERRORS, CA_REQUEST_DURATION

HANDLE_VERSION = 1
log = structlog.get_logger("renewers.ca")


class CARequestError(CAError):
    """A request to a CA failed; the message names the CA, the step and the fix."""

    def __init__(self, message: str, *, reason: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class Dropped:
    """What a CSR asked for that the issued certificate does not carry (empty: nothing)."""

    sans: tuple[str, ...] = ()  # "DNS:name", "IP:address", "email:...", "URI:..."
    ekus: tuple[str, ...] = ()  # "serverAuth", "clientAuth" or a dotted OID
    key_usages: tuple[str, ...] = ()  # RFC 5280 names: digitalSignature, keyEncipherment, ...
    subject: tuple[str, ...] = ()  # RFC 4514 attributes: "O=Example", "L=Oslo"

    def __bool__(self) -> bool:
        return bool(self.sans or self.ekus or self.key_usages or self.subject)

    @property
    def breaks_service(self) -> bool:
        """SANs, EKUs or key usages went missing: TLS peers may refuse the certificate."""
        return bool(self.sans or self.ekus or self.key_usages)

    def describe(self) -> str:
        """One line for people: 'SANs DNS:b.example.com; EKUs clientAuth'."""
        parts = [
            f"{label} {', '.join(items)}"
            for label, items in (
                ("SANs", self.sans),
                ("EKUs", self.ekus),
                ("key usages", self.key_usages),
                ("subject fields", self.subject),
            )
            if items
        ]
        return "; ".join(parts) or "nothing"

    def to_json(self) -> dict[str, list[str]]:
        return {
            "sans": list(self.sans),
            "ekus": list(self.ekus),
            "key_usages": list(self.key_usages),
            "subject": list(self.subject),
        }


@dataclass(frozen=True)
class Issued:
    """The CA issued the certificate: the leaf, and the chain above it (issuing CA first).

    `dropped` is None when the connector did not know the CSR (nothing was compared)."""

    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    profile: str | None = None
    dropped: Dropped | None = None


@dataclass(frozen=True)
class Pending:
    """The CA has not issued yet; persist `handle` (plain JSON) and poll it at `retry_at`."""

    handle: dict[str, Any]
    retry_at: datetime
    reason: str
    # True when only an operator's `provide` completes the request (the pipeline adds the
    # command with the renewal's id; connectors do not know it).
    awaits_provide: bool = False


@dataclass(frozen=True)
class CACapabilities:
    """What a CA will put in a certificate, as far as the connector knows before asking."""

    kind: str
    profile: str | None = None
    ekus: frozenset[str] | None = None  # dotted OIDs; None when the CA decides unseen
    note: str = ""

    def delivers(self, eku: str) -> bool | None:
        """True/False when known, None when only the issued certificate will tell."""
        return None if self.ekus is None else eku in self.ekus


@dataclass(frozen=True)
class RenewalWindow:
    """A CA-suggested renewal window (ACME ARI), with when to ask again."""

    start: datetime
    end: datetime
    retry_after: datetime


@dataclass(frozen=True)
class CheckResult:
    """One line of `ca-check`: what was checked and what was found."""

    step: str
    ok: bool
    detail: str


@runtime_checkable
class CAConnector(Protocol):
    """A CA the pipeline can submit CSRs to. Every method raises only CAError."""

    name: str
    kind: str

    async def submit(self, csr: x509.CertificateSigningRequest) -> Issued | Pending:
        """Send a new request. Raises CAError when the CA refuses or cannot be reached."""
        ...

    async def poll(self, handle: Mapping[str, Any]) -> Issued | Pending:
        """Continue the request a handle from `Pending` names; never submits it again."""
        ...

    async def ca_chain(self) -> tuple[x509.Certificate, ...]:
        """The CA certificates (issuing CA first) as the CA publishes them."""
        ...

    def capabilities(self) -> CACapabilities:
        """Profile and EKUs the CA will issue, when known from config or protocol."""
        ...

    async def renewal_window(self, leaf: x509.Certificate) -> RenewalWindow | None:
        """The CA's suggested renewal window for a certificate (ACME ARI), else None."""
        ...

    async def check(self) -> list[CheckResult]:
        """Reachability, authentication and chain, for `ca-check`."""
        ...

    async def aclose(self) -> None:
        """Release connections and listeners."""
        ...


@dataclass
class ConnectorBase:
    """Naming, errors, metrics and handles shared by the connectors."""

    name: str
    kind: str
    _ops: dict[str, int] = field(default_factory=dict, repr=False)

    def error(
        self, step: str, problem: str, fix: str, *, reason: str, retryable: bool = False
    ) -> CARequestError:
        return CARequestError(
            f"CA {self.name!r}: {step}: {problem}; {fix}", reason=reason, retryable=retryable
        )

    @overload
    def outcome(
        self, step: str, result: Issued, csr: x509.CertificateSigningRequest | None = None
    ) -> Issued: ...

    @overload
    def outcome(
        self,
        step: str,
        result: Issued | Pending,
        csr: x509.CertificateSigningRequest | None = None,
    ) -> Issued | Pending: ...

    def outcome(
        self,
        step: str,
        result: Issued | Pending,
        csr: x509.CertificateSigningRequest | None = None,
    ) -> Issued | Pending:
        """Log what a submit or poll came to (never secrets: handles hold none); with the
        CSR, also compare the certificate with it and record what the CA dropped."""
        if isinstance(result, Issued) and csr is not None and result.dropped is None:
            result = replace(result, dropped=dropped_from(csr, result.leaf))
        if isinstance(result, Issued):
            if result.dropped:
                log.warning(
                    "ca.dropped",
                    ca=self.name,
                    kind=self.kind,
                    step=step,
                    serial=f"{result.leaf.serial_number:x}",
                    dropped=result.dropped.describe(),
                )
            log.info(
                "ca.issued",
                ca=self.name,
                kind=self.kind,
                step=step,
                serial=f"{result.leaf.serial_number:x}",
                not_after=result.leaf.not_valid_after_utc.isoformat(),
                subject=result.leaf.subject.rfc4514_string(),
            )
        else:
            ids = {k: v for k, v in result.handle.items() if k in ("req_id", "order_url")}
            log.info(
                "ca.pending",
                ca=self.name,
                kind=self.kind,
                step=step,
                reason=result.reason,
                retry_at=result.retry_at.isoformat(),
                **ids,
            )
        return result

    @contextlib.contextmanager
    def measure(self, op: str) -> Iterator[None]:
        """Time one request and count its failure by reason."""
        started = time.perf_counter()
        self._ops[op] = self._ops.get(op, 0) + 1
        try:
            yield
        except CARequestError as exc:
            CA_ERRORS.labels(self.name, self.kind, exc.reason).inc()
            log.warning("ca.request_failed", ca=self.name, kind=self.kind, op=op, error=str(exc))
            raise
        except Exception as exc:
            CA_ERRORS.labels(self.name, self.kind, type(exc).__name__).inc()
            raise
        finally:
            CA_REQUEST_DURATION.labels(self.name, self.kind, op).observe(
                time.perf_counter() - started
            )

    def leaf_for(
        self,
        step: str,
        certs: list[x509.Certificate] | tuple[x509.Certificate, ...],
        csr: x509.CertificateSigningRequest,
        fix: str,
    ) -> x509.Certificate:
        """The certificate of a CA's answer that is for the CSR's key, wherever it stands (a
        PKCS#7 certs-only bag is a SET, RFC 5652 5.1: its order says nothing). None there:
        refused with reason `wrong_key`, naming what the CA certified instead, and counted in
        expressway_ca_errors_total (the answer arrived: no request failed to count it)."""
        want = _spki(csr.public_key())
        for cert in certs:
            if _spki(cert.public_key()) == want:
                return cert
        others = " and ".join(c.subject.rfc4514_string() for c in certs if not _is_ca(c))
        exc = self.error(
            step,
            "no certificate the CA returned is for the CSR's key"
            + (f" (it certified another key: {others})" if others else ""),
            fix,
            reason="wrong_key",
        )
        CA_ERRORS.labels(self.name, self.kind, exc.reason).inc()
        log.warning("ca.request_failed", ca=self.name, kind=self.kind, op=step, error=str(exc))
        raise exc

    def request_count(self, op: str) -> int:
        """How many requests of one kind this instance sent (tests and `sign` progress)."""
        return self._ops.get(op, 0)

    def new_handle(self, **fields: Any) -> dict[str, Any]:
        return {"v": HANDLE_VERSION, "ca": self.name, "kind": self.kind, **fields}

    def check_handle(self, handle: Mapping[str, Any], *required: str) -> None:
        if handle.get("ca") != self.name or handle.get("kind") != self.kind:
            raise self.error(
                "poll",
                f"the handle belongs to CA {handle.get('ca')!r} ({handle.get('kind')})",
                "poll it with the connector it came from",
                reason="bad_handle",
            )
        missing = [key for key in required if key not in handle]
        if missing or handle.get("v") != HANDLE_VERSION:
            raise self.error(
                "poll",
                f"the handle is incomplete or from another version (missing {missing})",
                "submit the CSR again",
                reason="bad_handle",
            )


def _spki(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


_KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)
_ANY_EKU = ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE


def _extension(
    holder: x509.Certificate | x509.CertificateSigningRequest, kind: type[x509.ExtensionType]
) -> Any:
    try:
        return holder.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _general_name(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value.lower().rstrip('.')}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value.lower()}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    return f"{type(name).__name__}:{name.value}"


def _key_usages(value: x509.KeyUsage) -> set[str]:
    used = {attr for attr in _KEY_USAGES if getattr(value, attr)}
    if value.key_agreement:
        used |= {a for a in ("encipher_only", "decipher_only") if getattr(value, a)}
    return used


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def dropped_from(csr: x509.CertificateSigningRequest, leaf: x509.Certificate) -> Dropped:
    """Compare an issued certificate with the CSR it answers: what did the CA leave out?

    An extension the certificate does not carry at all (EKU, key usage) restricts nothing
    (RFC 5280 4.2.1.3, 4.2.1.12), so only a narrower one counts as dropping."""
    asked_san = _extension(csr, x509.SubjectAlternativeName)
    got_san = _extension(leaf, x509.SubjectAlternativeName)
    got_names = {_general_name(n) for n in got_san} if got_san is not None else set()
    sans = [
        label
        for label in dict.fromkeys(_general_name(n) for n in (asked_san or []))
        if label not in got_names
    ]
    asked_eku = _extension(csr, x509.ExtendedKeyUsage)
    got_eku = _extension(leaf, x509.ExtendedKeyUsage)
    ekus: list[str] = []
    if asked_eku is not None and got_eku is not None and _ANY_EKU not in got_eku:
        ekus = [
            eku_config_name(oid.dotted_string)
            for oid in asked_eku
            if oid not in got_eku and oid != _ANY_EKU
        ]
    asked_ku = _extension(csr, x509.KeyUsage)
    got_ku = _extension(leaf, x509.KeyUsage)
    key_usages: list[str] = []
    if asked_ku is not None and got_ku is not None:
        key_usages = [_camel(u) for u in sorted(_key_usages(asked_ku) - _key_usages(got_ku))]
    got_subject = {(a.oid, str(a.value)) for a in leaf.subject}
    subject = [a.rfc4514_string() for a in csr.subject if (a.oid, str(a.value)) not in got_subject]
    return Dropped(tuple(sans), tuple(ekus), tuple(key_usages), tuple(subject))


def retry_at(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=max(0.0, seconds))


def parse_retry_after(value: str | None, default: float) -> float:
    """Seconds from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - utcnow()).total_seconds())


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def csr_der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def load_pem_certs(data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return []


def order_chain(
    leaf: x509.Certificate, others: list[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    """Put the CA certificates in issuing order above `leaf` (issuer first, root last)."""
    pool = [c for c in others if c != leaf]
    chain: list[x509.Certificate] = []
    current = leaf
    while pool:
        parent = next((c for c in pool if c.subject == current.issuer), None)
        if parent is None:
            break
        chain.append(parent)
        pool.remove(parent)
        if parent.subject == parent.issuer:
            break
        current = parent
    return tuple(chain + pool)


def client_ssl_context(
    trust_anchor: Path | None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    key_password: str | None = None,
) -> ssl.SSLContext:
    """Verify the CA's TLS server against the configured anchor (system roots when None);
    present `client_cert` (PEM, with its key, encrypted when `key_password`) when given."""
    ctx = ssl.create_default_context(cafile=str(trust_anchor) if trust_anchor else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if client_cert is not None:
        ctx.load_cert_chain(
            str(client_cert),
            str(client_key) if client_key else None,
            password=key_password if key_password is not None else _no_password,
        )
    return ctx


def _no_password() -> str:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise ssl.SSLError("the client key is encrypted and no client_key_password is set")


def write_private(path: Path, data: bytes) -> None:
    """Write a file only the service user can read (0600), in a 0700 directory."""
    make_private_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Presentation:
    """One ACME challenge answer to publish: for dns-01 a TXT record, for http-01 a file."""

    domain: str
    token: str
    key_authorization: str
    txt_value: str  # base64url(SHA-256(key_authorization)), the dns-01 TXT value

    @property
    def txt_name(self) -> str:
        return f"_acme-challenge.{self.domain.removeprefix('*.')}."

    def to_json(self) -> dict[str, str]:
        return {
            "domain": self.domain,
            "token": self.token,
            "key_authorization": self.key_authorization,
            "txt_value": self.txt_value,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Presentation:
        return cls(
            str(data["domain"]),
            str(data["token"]),
            str(data["key_authorization"]),
            str(data["txt_value"]),
        )


class ChallengeSolver(Protocol):
    """Publishes ACME challenge answers. Raises CAError naming the CA, step and fix."""

    challenge_type: str  # "dns-01" or "http-01"

    async def present(self, item: Presentation) -> None:
        """Publish the answer and return once the CA can see it. Idempotent."""
        ...

    async def cleanup(self, item: Presentation) -> None:
        """Remove the answer; never raises for an answer already gone."""
        ...

    async def aclose(self) -> None: ...
