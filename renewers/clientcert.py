"""Read the X15.5 client certificate of each target through its REST API, for the monitor.

The client certificate is never served on a port (the box presents it only as a TLS client),
so the daemon reads it periodically (`[daemon] client_cert_check`) from every owned target
with API credentials: sysinfo first (a version before X15.5 has no client store, status
`not_applicable`), then the client certificate resource found in /api/raml (none listed:
`unpublished`, since Cisco publishes no REST path for it; docs/devices.md). Every target is
read concurrently, each under its own timeout and with its own error handling, so one broken
box never delays or hides the others. Nothing read here triggers anything; it is exported
(`cert_kind="client"`) and alerted on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Protocol

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from expressway_certd.monitor.clientcert import (
    STATUS_ERROR,
    STATUS_NOT_APPLICABLE,
    STATUS_OK,
    STATUS_UNPUBLISHED,
    ClientCertState,
    has_client_store,
    merge,
)
from expressway_certd.monitor.config import ExpresswayConfig
from expressway_certd.monitor.eku import eku_problem
from expressway_certd.monitor.errors import CertdError
from expressway_certd.monitor.facts import facts_from_x509
from expressway_certd.renewers.expressway import (
    ExpresswayClient,
    ExpresswayClientConfig,
    OperationUnsupported,
    SystemInfo,
)

log = structlog.get_logger(__name__)

DEFAULT_TIMEOUT = 60.0  # one target's whole read: raml, sysinfo, the certificate


class ClientCertSource(Protocol):
    """What the reader needs of a box (ExpresswayClient; fakes in tests)."""

    async def system_info(self) -> SystemInfo: ...

    async def client_certificate(self) -> x509.Certificate: ...


Opener = Callable[[ExpresswayConfig], AbstractAsyncContextManager[ClientCertSource]]


def open_expressway(target: ExpresswayConfig) -> AbstractAsyncContextManager[ClientCertSource]:
    """The real box: an ExpresswayClient built from the target's config (reads the secret)."""
    return ExpresswayClient(ExpresswayClientConfig.from_target(target))


def readable(target: ExpresswayConfig) -> bool:
    """Targets whose client certificate can be read: API credentials configured, and not a
    configured version before X15.5 (a configured older version is believed: no API call)."""
    return (
        target.username is not None
        and target.password is not None
        and has_client_store(target.version) is not False
    )


async def read_client_cert(
    target: ExpresswayConfig,
    open_box: Opener = open_expressway,
    *,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - one bound for the whole read
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ClientCertState:
    """One read of `target`'s client certificate; never raises a CertdError or a timeout."""

    def state(status: str, **kw: object) -> ClientCertState:
        return ClientCertState(
            target.name,
            target.address,
            target.api_port,
            status,
            now(),
            **kw,  # type: ignore[arg-type]
        )

    version: str | None = None
    try:
        async with asyncio.timeout(timeout):
            async with open_box(target) as box:
                version = (await box.system_info()).version
                if has_client_store(version) is False:
                    return state(
                        STATUS_NOT_APPLICABLE,
                        version=version,
                        error=f"{target.name} runs {version}: the client certificate store "
                        "exists from X15.5",
                    )
                cert = await box.client_certificate()
    except OperationUnsupported as exc:
        return state(STATUS_UNPUBLISHED, version=version, error=str(exc))
    except TimeoutError:
        return state(
            STATUS_ERROR,
            version=version,
            error=f"{target.name}: read client certificate: no answer within {timeout:.0f} s; "
            "check that the API answers on "
            f"{target.address}:{target.api_port}",
        )
    except CertdError as exc:
        text = str(exc)
        if not text.startswith(target.name):  # e.g. a secret file's error names no target
            text = f"{target.name}: read client certificate: {text.lstrip(': ')}"
        return state(STATUS_ERROR, version=version, error=text)
    facts = facts_from_x509(cert)
    return state(
        STATUS_OK,
        version=version,
        facts=facts,
        eku_problem=eku_problem(facts, version, target.role, cert_kind="client"),
        pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
    )


class ClientCertWatch:
    """The latest client certificate state per target, refreshed by `read_all`."""

    def __init__(
        self,
        open_box: Opener = open_expressway,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        concurrency: int = 16,
    ) -> None:
        self._open = open_box
        self._timeout = timeout
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self.states: dict[str, ClientCertState] = {}

    async def read(self, target: ExpresswayConfig) -> ClientCertState:
        async with self._slots:
            new = await read_client_cert(target, self._open, timeout=self._timeout)
        merged = merge(self.states.get(target.name), new)
        self.states[target.name] = merged
        if new.status == STATUS_ERROR:
            log.warning("client certificate read failed", target=target.name, error=new.error)
        return merged

    async def read_all(self, targets: Iterable[ExpresswayConfig]) -> None:
        """Read every readable target concurrently; forget targets no longer given."""
        wanted = [t for t in targets if readable(t)]
        names = {t.name for t in wanted}
        for name in [n for n in self.states if n not in names]:
            del self.states[name]
        await asyncio.gather(*(self.read(t) for t in wanted))
