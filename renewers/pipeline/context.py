"""What a stage works with: the `Context` (target, config, device factory, CA connector, the
renewal's persisted `data`), the `Devices` Protocol and its configured implementation, and
small helpers every stage shares (fingerprints, retry with backoff, the named locks)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from monitor.config import Config, ExpresswayConfig, UnifiedCMConfig
from monitor.probe import Prober
from monitor.store import Store
from renewers.ca.base import CAConnector
from renewers.cucm import CucmClient, CucmClientConfig
from renewers.expressway import (
    ExpresswayClient,
    ExpresswayClientConfig,
)
from renewers.pipeline.locks import (
    exclusive,
)
from renewers.pipeline.outcomes import (
    RETRY_BACKOFF,
    Failed,
)
from renewers.validate import (
    Plan,
)

# Test hook (tests/e2e/test_renewal_crash.py), inert unless this variable is set: the process
# SIGKILLs itself right after persisting "start" (a new renewal) or a stage's outcome ("csr"),
# or when a stage has run but its outcome is not persisted yet ("csr-unsaved"); for any target
# ("csr") or one ("expe-c2:csr").
KILL_AFTER_ENV = "EXPRESSWAY_CERTD_TEST_KILL_AFTER"


def kill_hook(target: str, point: str) -> None:
    wanted = os.environ.get(KILL_AFTER_ENV)
    if wanted and wanted in (point, f"{target}:{point}"):
        os.kill(os.getpid(), signal.SIGKILL)


class Devices(Protocol):
    """Makes the device clients (real ones against boxes or simulators; fakes in unit tests)."""

    def expressway(
        self, target: ExpresswayConfig
    ) -> AbstractAsyncContextManager[ExpresswayClient]: ...

    def unified_cm(self, ucm: UnifiedCMConfig) -> AbstractAsyncContextManager[CucmClient]: ...


class ConfiguredDevices:
    """Clients built from the config: credentials are read from their secret references."""

    def __init__(self, overrides: Mapping[str, Any] | None = None) -> None:
        self._overrides = dict(overrides or {})

    def expressway(self, target: ExpresswayConfig) -> ExpresswayClient:
        return ExpresswayClient(ExpresswayClientConfig.from_target(target, **self._overrides))

    def unified_cm(self, ucm: UnifiedCMConfig) -> CucmClient:
        return CucmClient(CucmClientConfig.from_config(ucm))


async def _no_checkpoint() -> None:
    """Contexts outside the runner (unit tests) persist nothing mid-stage."""


@dataclass
class Context:
    """What a stage works with; `data` is persisted after every stage."""

    renewal_id: str
    target: ExpresswayConfig
    config: Config
    devices: Devices
    ca: CAConnector
    ca_name: str
    prober: Prober
    now: Callable[[], datetime]
    data: dict[str, Any]
    cluster_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    store: Store | None = None  # for leases shared with other processes
    owner: str = ""
    # Persists `data` now, inside a stage (progress that must survive a crash mid-stage).
    checkpoint: Callable[[], Awaitable[None]] = field(default=_no_checkpoint)

    @property
    def plan(self) -> Plan:
        raw = dict(self.data["plan"])
        for key in ("sans", "required_eku", "zones", "notes"):
            raw[key] = tuple(raw.get(key, ()))
        return Plan(**raw)

    def csr(self) -> x509.CertificateSigningRequest:
        return x509.load_pem_x509_csr(self.data["csr_pem"].encode())

    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.data["issued"]["leaf_pem"].encode())

    def chain(self) -> list[x509.Certificate]:
        pem = self.data["issued"]["chain_pem"]
        return list(x509.load_pem_x509_certificates(pem.encode())) if pem else []


def sha256_of(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def retry(ctx: Context, why: str) -> Failed:
    attempts = int(ctx.data.get("_attempts", 0))
    delay = RETRY_BACKOFF[min(attempts, len(RETRY_BACKOFF) - 1)]
    return Failed(why, ctx.now() + delay)


def exclusive_for(ctx: Context, name: str) -> AbstractAsyncContextManager[str | None]:
    """Hold `name` against other renewals (renewers/pipeline/locks.py `exclusive`)."""
    return exclusive(name, locks=ctx.cluster_locks, store=ctx.store, owner=ctx.owner, now=ctx.now)
