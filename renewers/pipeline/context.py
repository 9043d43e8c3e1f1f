"""What a stage works with: the `Context` (target, config, device factory, CA connector, the
renewal's persisted `data`), the `Devices` and `Probes` Protocols (fakes in unit tests) and the
configured devices, and small helpers every stage shares (fingerprints, retry with backoff, the
named locks)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from expressway_certd.monitor.config import Config, ExpresswayConfig, UnifiedCMConfig
from expressway_certd.monitor.endpoint import Endpoint
from expressway_certd.monitor.errors import CAError, CertdError, DeviceError
from expressway_certd.monitor.probe import Observation, TrustStore
from expressway_certd.monitor.store import Store
from expressway_certd.renewers.ca.base import CAConnector, CARequestError
from expressway_certd.renewers.cucm import CucmClient, CucmClientConfig
from expressway_certd.renewers.expressway import (
    CertificateEkuRefused,
    CsrRequest,
    ExpresswayClient,
    ExpresswayClientConfig,
    OperationUnsupported,
    TrustedCasLost,
)
from expressway_certd.renewers.pipeline.locks import (
    exclusive,
)
from expressway_certd.renewers.pipeline.outcomes import (
    RETRY_BACKOFF,
    Blocked,
    Failed,
    Outcome,
    OutcomeReason,
)
from expressway_certd.renewers.pipeline.record import (
    CLIENT,
    IssuedCert,
    RecordError,
    RenewalRecord,
    Snapshot,
)
from expressway_certd.renewers.validate import Plan

# The fault-injection seam: the runner and the stages call it at named points, each right
# after what it names is persisted, so a test can end the process there (tests/e2e/
# seamed_daemon.py SIGKILLs its own process) and prove a new process resumes correctly:
#   "start"                         a new renewal row is stored
#   "<stage>-unsaved"               a stage has run, its outcome is not persisted yet
#   "<stage>"                       a stage's outcome is persisted
#   "ucm-restart:<node>:<service>"  one Unified CM service restart is persisted
# Production passes nothing: `no_faults`.
FaultSeam = Callable[[str, str], None]  # (target, point)


def no_faults(target: str, point: str) -> None:
    """The seam in production: does nothing."""


class Devices(Protocol):
    """Makes the device clients (real ones against boxes or simulators; fakes in unit tests)."""

    def expressway(
        self, target: ExpresswayConfig
    ) -> AbstractAsyncContextManager[ExpresswayClient]: ...

    def unified_cm(self, ucm: UnifiedCMConfig) -> AbstractAsyncContextManager[CucmClient]: ...


class Probes(Protocol):
    """What the stages need of the monitor's prober (monitor.probe.Prober; a fake in unit
    tests): the daemon's trust anchors and one probe of one endpoint."""

    @property
    def trust(self) -> TrustStore: ...

    async def probe(self, target: str, endpoint: Endpoint) -> Observation: ...


class ConfiguredDevices:
    """Clients built from the config: credentials are read from their secret references."""

    def __init__(
        self,
        overrides: Mapping[str, Any] | None = None,
        *,
        cucm_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        """`overrides`: ExpresswayClientConfig fields (e.g. the CLI's timeout);
        `cucm_overrides`: CucmClientConfig fields (tests: a short poll_interval on the lab)."""
        self._overrides = dict(overrides or {})
        self._cucm_overrides = dict(cucm_overrides or {})

    def expressway(self, target: ExpresswayConfig) -> ExpresswayClient:
        return ExpresswayClient(ExpresswayClientConfig.from_target(target, **self._overrides))

    def unified_cm(self, ucm: UnifiedCMConfig) -> CucmClient:
        return CucmClient(CucmClientConfig.from_config(ucm, **self._cucm_overrides))


async def _no_checkpoint() -> None:
    """Contexts outside the runner (unit tests) persist nothing mid-stage."""


T = TypeVar("T")


@dataclass
class Context:
    """What a stage works with; a stage sets `record` to what it learnt (a new frozen
    RenewalRecord), and the runner persists it after every stage."""

    renewal_id: str
    target: ExpresswayConfig
    config: Config
    devices: Devices
    ca: CAConnector
    ca_name: str
    prober: Probes
    now: Callable[[], datetime]
    record: RenewalRecord
    attempts: int = 0  # failed, waiting or blocked outcomes of this stage so far
    cluster_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    store: Store | None = None  # for leases shared with other processes
    owner: str = ""
    # Persists `record` now, inside a stage (progress that must survive a crash mid-stage).
    checkpoint: Callable[[], Awaitable[None]] = field(default=_no_checkpoint)
    # Called at named points (see FaultSeam); tests pass one in, production does not.
    fault_seam: FaultSeam = no_faults

    def update(self, **changes: Any) -> RenewalRecord:
        """Replace fields of the record (dataclasses.replace); returns the new one."""
        self.record = dataclasses.replace(self.record, **changes)
        return self.record

    @property
    def kind(self) -> str:
        """Which certificate this renewal renews: "server", or "client" (X15.5 client store)."""
        return self.record.kind

    @property
    def snapshot(self) -> Snapshot:
        return _required(self.record.snapshot, "snapshot", self)

    @property
    def plan(self) -> Plan:
        return _required(self.record.plan, "plan", self)

    @property
    def issued(self) -> IssuedCert:
        return _required(self.record.issued, "issued", self)

    @property
    def installed_sha256(self) -> str:
        return _required(self.record.installed_sha256, "installed_sha256", self)

    def csr(self) -> x509.CertificateSigningRequest:
        return x509.load_pem_x509_csr(_required(self.record.csr_pem, "csr_pem", self).encode())

    def leaf(self) -> x509.Certificate:
        return self.issued.leaf()

    def chain(self) -> list[x509.Certificate]:
        return self.issued.chain()


def _required(value: T | None, name: str, ctx: Context) -> T:
    """A field an earlier stage sets; its absence means the stored record is not one this
    pipeline wrote."""
    if value is None:
        raise RecordError(
            f"{ctx.target.name}: renewal {ctx.renewal_id}: its record has no {name}, which an "
            "earlier stage sets; cancel it ('expressway-certd cancel "
            f"{ctx.renewal_id}') and start a new one"
        )
    return value


# The box operations that differ by renewal kind: the server certificate's documented
# resources, or the X15.5 client store's resources found in /api/raml.


async def installed_cert(box: ExpresswayClient, kind: str) -> x509.Certificate:
    """The certificate of `kind` the box shows as installed."""
    return await (box.client_certificate() if kind == CLIENT else box.server_certificate())


async def pending_csr_of(box: ExpresswayClient, kind: str) -> x509.CertificateSigningRequest | None:
    return await (box.pending_client_csr() if kind == CLIENT else box.pending_csr())


async def generate_csr_on(
    box: ExpresswayClient, kind: str, request: CsrRequest
) -> x509.CertificateSigningRequest:
    if kind == CLIENT:
        return await box.generate_client_csr(request)
    return await box.generate_csr(request)


async def upload_cert(box: ExpresswayClient, kind: str, leaf: x509.Certificate) -> None:
    if kind == CLIENT:
        await box.upload_client_certificate(leaf)
    else:
        await box.upload_server_certificate(leaf)


def sha256_of(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def retry(ctx: Context, why: str, reason: OutcomeReason) -> Failed:
    attempts = ctx.attempts
    delay = RETRY_BACKOFF[min(attempts, len(RETRY_BACKOFF) - 1)]
    return Failed(why, ctx.now() + delay, reason)


def expected(exc: Exception) -> bool:
    """An error a stage may raise on purpose (the project's tree, the network); anything
    else is a bug or an unforeseen answer, logged with its traceback."""
    return isinstance(exc, CertdError | OSError | TimeoutError)


def outcome_of_error(ctx: Context, stage: str, exc: Exception) -> Outcome:
    """What an exception raised by a stage means for the renewal (one table for the runner
    and the dry run of `plan`): Blocked when only the operator can help, Failed with backoff
    when a retry may."""
    target = ctx.target.name
    if isinstance(exc, CARequestError):
        if exc.retryable:
            return retry(ctx, str(exc), OutcomeReason.CA_UNAVAILABLE)
        return Blocked(str(exc), OutcomeReason.CA_REFUSED)
    if isinstance(exc, OperationUnsupported | CertificateEkuRefused | TrustedCasLost):
        # retrying cannot help: the operator must act
        return Blocked(str(exc), OutcomeReason.DEVICE_REFUSED)
    if isinstance(exc, DeviceError):
        return retry(ctx, str(exc), OutcomeReason.DEVICE_UNAVAILABLE)
    if isinstance(exc, CAError):
        return retry(ctx, str(exc), OutcomeReason.CA_UNAVAILABLE)
    if isinstance(exc, CertdError):
        return Blocked(str(exc), OutcomeReason.OPERATOR_ACTION)
    if isinstance(exc, OSError | TimeoutError):
        return retry(ctx, f"{target}: {stage}: {type(exc).__name__}: {exc}", OutcomeReason.NETWORK)
    # a bug or an unforeseen answer: this renewal alone fails
    return retry(
        ctx,
        f"{target}: {stage}: unexpected {type(exc).__name__}: {exc}; retried with "
        "backoff; the traceback is in the log; if it repeats, cancel the renewal "
        f"('expressway-certd cancel {ctx.renewal_id}') and report it",
        OutcomeReason.UNEXPECTED,
    )


def exclusive_for(ctx: Context, name: str) -> AbstractAsyncContextManager[str | None]:
    """Hold `name` against other renewals (renewers/pipeline/locks.py `exclusive`)."""
    return exclusive(name, locks=ctx.cluster_locks, store=ctx.store, owner=ctx.owner, now=ctx.now)
