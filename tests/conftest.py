"""Shared fixtures: a cert factory minting real certificates per case, and lab TLS endpoints."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from expressway_certd_lab.pki import CA, CLIENT_AUTH, SERVER_AUTH, write_key_and_chain
from expressway_certd_lab.tls import LabListener, server_context
from hypothesis import settings as hypothesis_settings

from tests.helpers import need_binary
from tests.integration.ca_servers import (
    bind9_server,
    kdc_server,
    pebble_nonce_reject_server,
    pebble_server,
)
from tests.pg import postgres_server

# Session-scoped servers are imported here, once: a test module that imported the fixture
# function would get one server of its own (and under xdist one per module and worker), all
# kept to the end of the session (tests/unit/test_suite_fixtures.py). Under xdist "session"
# is one worker's session: each worker starts its own, on free loopback ports, in its own
# temporary directory (tmp_path_factory is per worker).
# need_binary lives in tests.helpers; importing it from here still works.
__all__ = [
    "bind9_server",
    "kdc_server",
    "need_binary",
    "pebble_nonce_reject_server",
    "pebble_server",
]

# `make test` runs the property tests with a fixed seed, so CI's verdict is reproducible and
# never depends on the draw; `make fuzz` draws fresh inputs (and is where new examples come
# from: every input it finds goes back into the test as an @example).
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
hypothesis_settings.register_profile("fuzz", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """A test that runs a CLI verb in process configures structlog; undo it afterwards."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """One PostgreSQL server for the session (started when a test first asks for it); take a
    database of your own on it with tests.pg.fresh_database."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def lab_root() -> CA:
    return CA.create("Test Root CA")


@pytest.fixture(scope="session")
def lab_issuing(lab_root: CA) -> CA:
    return CA.create("Test Issuing CA", parent=lab_root)


@pytest.fixture
def make_cert(lab_issuing: CA) -> Callable[..., x509.Certificate]:
    """make_cert(cn=..., sans=[...], not_after=..., days=..., eku=[...], ca=...)."""

    def factory(
        cn: str = "expe.example.com",
        sans: list[str] | None = None,
        *,
        not_after: datetime | None = None,
        not_before: datetime | None = None,
        days: float = 90,
        eku: list[x509.ObjectIdentifier] | None = None,
        ca: CA | None = None,
    ) -> x509.Certificate:
        issuer = ca or lab_issuing
        cert, _ = issuer.issue(
            cn,
            sans,
            not_after=not_after,
            not_before=not_before,
            days=days,
            eku=eku,
            key_kind="ec",
            key_size=256,
        )
        return cert

    return factory


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def trust_bundle(tmp_path: Path, lab_root: CA) -> Path:
    return lab_root.write_bundle(tmp_path / "root.pem")


class Served:
    """A lab listener plus the files behind it; `serve(...)` swaps the certificate."""

    def __init__(self, listener: LabListener, directory: Path, issuing: CA) -> None:
        self.listener = listener
        self.directory = directory
        self.issuing = issuing
        self._n = 0

    @property
    def port(self) -> int:
        return self.listener.port

    def serve(
        self,
        cn: str = "expe.example.com",
        sans: list[str] | None = None,
        *,
        days: float = 90,
        not_after: datetime | None = None,
        eku: list[x509.ObjectIdentifier] | None = None,
        ca: CA | None = None,
    ) -> x509.Certificate:
        issuer = ca or self.issuing
        now = datetime.now(UTC)
        leaf, key = issuer.issue(
            cn,
            sans,
            days=days,
            not_after=not_after,
            not_before=now - timedelta(days=1),
            eku=eku if eku is not None else [SERVER_AUTH, CLIENT_AUTH],
            key_kind="ec",
            key_size=256,
        )
        assert key is not None
        self._n += 1
        chain = issuer.chain()[:-1] if issuer.parent else []
        cert_file, key_file = write_key_and_chain(
            self.directory, f"leaf{self.listener.port}-{self._n}", leaf, key, chain
        )
        self.listener.set_cert(cert_file, key_file)
        return leaf


@pytest.fixture
async def served(tmp_path: Path, lab_issuing: CA) -> AsyncIterator[Callable[..., Any]]:
    """served(mode="tls", cn=..., sans=..., days=...) -> Served, listening on 127.0.0.1."""
    started: list[LabListener] = []

    async def factory(mode: str = "tls", **cert: Any) -> Served:
        leaf, key = lab_issuing.issue("placeholder", ["placeholder"], key_kind="ec", key_size=256)
        assert key is not None
        cert_file, key_file = write_key_and_chain(tmp_path, f"p{len(started)}", leaf, key, [])
        listener = LabListener(mode=mode, context=server_context(cert_file, key_file))
        await listener.start()
        started.append(listener)
        s = Served(listener, tmp_path, lab_issuing)
        if mode in ("tls", "xmpp"):
            s.serve(**cert)
        return s

    yield factory
    for listener in started:
        await listener.stop()
