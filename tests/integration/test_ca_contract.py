"""One contract, every CA connector: EST and AD CS against the lab simulators over HTTPS, ACME
against real Pebble answering DNS-01 through a real BIND9, and the fault cases (a CA that
denies, drops a SAN, stalls, forgets its client, misorders the chain or certifies another key)
against the CAs that can be made to misbehave."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import structlog
from cryptography import x509
from expressway_certd_lab.adcs import ADCSSimulator
from expressway_certd_lab.pki import CA
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from expressway_certd.monitor.config import Secret
from expressway_certd.monitor.durations import utcnow
from expressway_certd.monitor.errors import CAError
from expressway_certd.renewers.ca.acme import ACMEConnector
from expressway_certd.renewers.ca.acme_config import ACMEConfig, RFC2136Config
from expressway_certd.renewers.ca.base import (
    CACapabilities,
    CAConnector,
    CARequestError,
    ChallengeSolver,
    ConnectorBase,
    Issued,
    Pending,
    Presentation,
)
from expressway_certd.renewers.ca.dns01 import RFC2136Solver
from expressway_certd.renewers.ca.est import ESTConnector
from expressway_certd.renewers.ca.est_config import ESTConfig
from expressway_certd.renewers.ca.hook import HookSolver
from expressway_certd.renewers.ca.http01 import HTTP01Responder
from expressway_certd.renewers.validate import Issuance, Plan, validate
from tests.integration.ca_faults import (
    Fault,
    FaultProxy,
    order_turns_invalid,
    pebble_proxy,
    rewrite_certificate,
    stall_on,
)
from tests.integration.ca_servers import (  # noqa: F401 - fixtures
    ADCS_KINDS,
    TSIG_KEY,
    ZONE,
    Bind9,
    Harness,
    Pebble,
    acme_harness,
    adcs_harness,
    adcs_language,
    ca_fixture,
    est_harness,
    harness_fixture,
    make_csr,
    make_harness,
    start_pebble,
    until_issued,
)
from tests.integration.libest import libest_ca  # noqa: F401 - the `libest` fixture

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _default_structlog() -> Iterator[None]:
    """Log at every level here, whatever an earlier CLI test configured."""
    saved = structlog.get_config()
    structlog.reset_defaults()
    yield
    structlog.configure(**saved)


def sans(cert: x509.Certificate) -> set[str]:
    """The DNS SANs; none when the CA left the extension out (libest's example CA)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return set(ext.get_values_for_type(x509.DNSName))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_submit_issues_leaf_for_the_csr_key_with_a_chain_that_verifies(ca: Harness) -> None:
    conn = ca.connector()
    assert isinstance(conn, CAConnector)
    names = ca.names()
    csr = make_csr(*names)
    issued = await ca.issued(conn, await conn.submit(csr))
    assert issued.leaf.public_key() == csr.public_key()
    assert sans(issued.leaf) == set(names)
    assert issued.chain, "the chain above the leaf is returned"
    issued.leaf.verify_directly_issued_by(issued.chain[0])
    for lower, upper in zip(issued.chain, issued.chain[1:], strict=False):
        lower.verify_directly_issued_by(upper)


async def test_pending_handle_is_json_and_a_new_instance_finishes_without_resubmitting(
    ca: Harness,
) -> None:
    harness = ca
    harness.set_manual(True)
    first = harness.connector(wait=0)
    csr = make_csr(*harness.names())
    with capture_logs() as logs:
        result = await first.submit(csr)
    assert [(e["event"], e["ca"], e["step"]) for e in logs if e["event"].startswith("ca.")] == [
        ("ca.pending", harness.name, "submit")
    ]
    assert isinstance(result, Pending), result
    assert result.retry_at.tzinfo is not None
    handle = json.loads(json.dumps(result.handle))
    assert harness.name in json.dumps(handle)
    await first.aclose()

    harness.approve()
    second = harness.connector(wait=30)
    issued = await harness.issued(second, await second.poll(handle))
    assert issued.leaf.public_key() == csr.public_key()
    assert first.request_count(harness.submit_op) == 1
    # EST continues a request by sending the same CSR again (RFC 7030 4.2.3); others never do.
    assert (second.request_count(harness.submit_op) > 0) == harness.poll_resubmits
    if harness.ca_submissions() is not None:
        assert harness.ca_submissions() == 1


async def test_a_handle_from_another_ca_is_refused_with_the_ca_named(ca: Harness) -> None:
    harness = ca
    conn = harness.connector()
    with pytest.raises(
        CAError, match=f"CA '{harness.name}': poll: the handle belongs to CA 'other'"
    ):
        await conn.poll(
            {
                "v": 1,
                "ca": "other",
                "kind": harness.kind,
                "csr": "",
                "order_url": "",
                "req_id": 1,
                "operation": "x",
            }
        )


async def test_wrong_trust_anchor_fails_naming_ca_step_and_fix(
    harness: Harness, tmp_path: Path
) -> None:
    stranger = CA.create("Someone else").write_bundle(tmp_path / "stranger.pem")
    conn = harness.connector(trust_anchor=stranger)
    before = metric(
        "expressway_ca_errors_total", ca=harness.name, kind=harness.kind, reason="tls_verify"
    )
    with pytest.raises(CAError) as info:
        await conn.submit(make_csr(*harness.names()))
    message = str(info.value)
    assert message.startswith(f"CA '{harness.name}': ")
    assert "trust_anchor" in message
    after = metric(
        "expressway_ca_errors_total", ca=harness.name, kind=harness.kind, reason="tls_verify"
    )
    assert after == before + 1


async def test_wrong_secret_is_refused_and_never_shown(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = harness.wrong_secret
    monkeypatch.setenv("CERTD_TEST_WRONG", wrong)
    conn = harness.connector(password_env="CERTD_TEST_WRONG")
    with capture_logs() as logs, pytest.raises(CAError) as info:
        await conn.submit(make_csr(*harness.names()))
    assert f"CA '{harness.name}'" in str(info.value)
    assert any(e["event"] == "ca.request_failed" and e["ca"] == harness.name for e in logs)
    for text in (str(info.value), repr(conn), repr(getattr(conn, "config", "")), repr(logs)):
        assert wrong not in text
        assert harness.secret not in text


async def test_request_durations_are_recorded(ca: Harness) -> None:
    harness = ca
    conn = harness.connector()
    op = harness.submit_op
    before = metric(
        "expressway_ca_request_duration_seconds_count", ca=harness.name, kind=harness.kind, op=op
    )
    await harness.issued(conn, await conn.submit(make_csr(*harness.names())))
    after = metric(
        "expressway_ca_request_duration_seconds_count", ca=harness.name, kind=harness.kind, op=op
    )
    assert after == before + 1


async def test_capabilities_and_check(ca: Harness) -> None:
    harness = ca
    conn = harness.connector()
    caps = conn.capabilities()
    assert isinstance(caps, CACapabilities)
    assert caps.kind == harness.kind
    results = await conn.check()
    assert results and all(r.ok for r in results), results
    chain = await conn.ca_chain()
    assert all(c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca for c in chain)


# --- A misbehaving CA ---------------------------------------------------------------------
# Cases that are not about one protocol: what a CA may do wrong, and what every connector must
# then do. Each case's fixture is parametrised over the CAs that can be made to do it: the lab
# simulators through their own failure modes, Pebble through the fault proxy of ca_faults.py.


@dataclass
class Misbehaving:
    """One CA that can be made to misbehave, as the fault cases drive it."""

    name: str
    connector: Callable[..., Any]  # (wait=seconds, timeout=seconds) -> connector
    names: Callable[[], list[str]]
    deny: Callable[[dict[str, Any], str], None]  # the CA denies the pending request
    fault: Callable[[Fault], None]  # the CA's answers go through this from now on
    forget: Callable[[], None]  # the CA forgets its clients (accounts, sessions)


@pytest.fixture(scope="session", name="pebble_chain")
def pebble_chain_server(tmp_path_factory: pytest.TempPathFactory, bind9: Bind9) -> Iterator[Pebble]:
    """Pebble issuing through two intermediates, so a chain has an order to get wrong."""
    server = start_pebble(
        tmp_path_factory.mktemp("pebble-chain"), bind9.port, env={"PEBBLE_CHAIN_LENGTH": "4"}
    )
    try:
        yield server
    finally:
        server.proc.terminate()
        server.proc.wait(10)


def acme_misbehaving(tmp_path: Path, pebble: Pebble, bind9: Bind9) -> Iterator[Misbehaving]:
    proxy = pebble_proxy(pebble.directory_url, pebble.trust_anchor, tmp_path)
    os.environ["CERTD_TEST_TSIG"] = bind9.tsig_secret
    made: list[Any] = []

    def connector(wait: float = 30, timeout: float = 30) -> Any:
        config = ACMEConfig(
            "faulty-acme",
            proxy.directory_url,
            trust_anchor=proxy.trust_anchor,
            timeout=timedelta(seconds=timeout),
            rfc2136=RFC2136Config(
                "127.0.0.1", bind9.port, ZONE + ".", TSIG_KEY, Secret("env:CERTD_TEST_TSIG"),
                propagation_timeout=timedelta(seconds=10),
            ),
        )  # fmt: skip
        conn = ACMEConnector(config, data_dir=tmp_path, wait=timedelta(seconds=wait))
        made.append(conn)
        return conn

    def deny(handle: dict[str, Any], why: str) -> None:
        proxy.fault = order_turns_invalid(why, handle["order_url"])

    def fault(new: Fault) -> None:
        proxy.fault = new

    try:
        yield Misbehaving(
            "faulty-acme", connector, lambda: [f"f-{secrets.token_hex(4)}.{ZONE}"],
            deny, fault, pebble.restart,
        )  # fmt: skip
    finally:
        for conn in made:
            asyncio.run(conn.aclose())
        proxy.stop()


def adcs_misbehaving(tmp_path: Path, language: str = "en") -> Iterator[Misbehaving]:
    for harness in adcs_harness(tmp_path, language=language):
        sim: ADCSSimulator = harness.server
        sim.manager_approval = True

        def deny(handle: dict[str, Any], why: str, sim: ADCSSimulator = sim) -> None:
            sim.deny(int(handle["req_id"]), why)

        def unsupported(*_: object) -> None:
            pytest.skip("the AD CS simulator has no such failure mode")

        def connector(wait: float = 30, timeout: float = 30, h: Harness = harness) -> Any:
            return h.connector(wait=wait)

        yield Misbehaving(
            "corp-adcs", connector, harness.names,
            deny, unsupported, unsupported,
        )  # fmt: skip


@pytest.fixture(params=[*ADCS_KINDS, "acme"], name="denying")
def denying_fixture(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Misbehaving]:
    """CAs that can answer pending, then denied."""
    monkeypatch.setenv("CERTD_TEST_SECRET", "Adcs-Secret1")
    if request.param in ADCS_KINDS:
        yield from adcs_misbehaving(tmp_path, adcs_language(request.param, monkeypatch))
    else:
        yield from acme_misbehaving(
            tmp_path, request.getfixturevalue("pebble_chain"), request.getfixturevalue("bind9")
        )


@pytest.fixture(params=["acme"], name="faulty")
def faulty_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Misbehaving]:
    """CAs whose answers can be rewritten: Pebble behind the fault proxy."""
    yield from acme_misbehaving(
        tmp_path, request.getfixturevalue("pebble_chain"), request.getfixturevalue("bind9")
    )


async def test_pending_then_denied_fails_naming_the_ca_and_its_reason(denying: Misbehaving) -> None:
    conn = denying.connector(wait=0)
    pending = await conn.submit(make_csr(*denying.names()))
    assert isinstance(pending, Pending)
    denying.deny(pending.handle, "Denied by the contract test")
    with pytest.raises(CAError) as info:
        await until_issued(conn, await conn.poll(pending.handle))
    assert str(info.value).startswith(f"CA '{denying.name}': ")
    assert "Denied by the contract test" in str(info.value)
    assert getattr(info.value, "retryable", None) is False


@dataclass
class Miscertifying:
    """A CA that can be made to return its certificates in an order of its own, or a
    certificate for a key that is not the CSR's."""

    name: str
    connector: Callable[[], Any]
    names: Callable[[], list[str]]
    finish: Callable[[Any, Issued | Pending], Awaitable[Issued]]  # result -> the certificate
    misorder: Callable[[], None]  # from now on: root first, leaf anywhere
    other_key: Callable[[], None]  # from now on: a certificate for a key of the CA's own


def stranger_certificate(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    stranger = CA.create("Stranger CA")
    leaf, _ = stranger.issue("someone-else.lab.test", key_kind="ec", key_size=256)
    return [leaf, stranger.cert]


@pytest.fixture(params=["est", "libest", *ADCS_KINDS, "manual", "acme"], name="miscertifying")
def miscertifying_fixture(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Miscertifying]:
    """Every kind whose CA can be made to do it: the EST simulator (a certs-only bag root
    first, with the leaf inside), the AD CS simulator (certnew.p7b root first), a portal
    operator who hands the chain in root first or a certificate for another key, and Pebble
    behind the fault proxy (the PEM chain reversed, or another CA's certificate)."""
    if request.param == "libest":
        pytest.skip(
            "Cisco's estserver cannot be made to: its example CA (example/util/ossl_srv.c, "
            "OpenSSL's `ca` app built in) signs the CSR's own key, and no option of it "
            "reorders its answer or certifies another key"
        )
    if request.param == "acme":
        for bad in acme_misbehaving(
            tmp_path, request.getfixturevalue("pebble_chain"), request.getfixturevalue("bind9")
        ):
            yield Miscertifying(
                bad.name, bad.connector, bad.names, until_issued,
                lambda bad=bad: bad.fault(rewrite_certificate(lambda c: list(reversed(c)))),
                lambda bad=bad: bad.fault(rewrite_certificate(stranger_certificate)),
            )  # fmt: skip
        return
    for h in make_harness(request.param, request, tmp_path, monkeypatch):
        assert h.misorder is not None and h.other_key is not None
        yield Miscertifying(
            h.name, lambda h=h: h.connector(), h.names, h.issued, h.misorder, h.other_key
        )


async def test_chain_in_the_wrong_order_is_returned_in_issuing_order(
    miscertifying: Miscertifying,
) -> None:
    """Leaf = the certificate for the CSR's key, chain leaf -> root: what validate checks
    and what the Expressway (OpenSSL) takes, leaf then intermediates."""
    bad = miscertifying
    bad.misorder()
    csr = make_csr(*bad.names())
    conn = bad.connector()
    issued = await bad.finish(conn, await conn.submit(csr))
    assert issued.leaf.public_key() == csr.public_key()
    assert len(issued.chain) >= 2, "the CA has an intermediate and a root to put in order"
    issued.leaf.verify_directly_issued_by(issued.chain[0])
    for lower, upper in zip(issued.chain, issued.chain[1:], strict=False):
        lower.verify_directly_issued_by(upper)


async def test_certificate_for_a_different_key_is_refused_naming_the_ca_and_the_fix(
    miscertifying: Miscertifying,
) -> None:
    bad = miscertifying
    bad.other_key()
    conn = bad.connector()
    errors = {"name": "expressway_ca_errors_total", "ca": bad.name, "kind": conn.kind}
    before = metric(**errors, reason="wrong_key")
    with pytest.raises(CARequestError) as info:
        await bad.finish(conn, await conn.submit(make_csr(*bad.names())))
    assert metric(**errors, reason="wrong_key") == before + 1, "counted once, for the alert"
    message = str(info.value)
    assert message.startswith(f"CA '{bad.name}': ")
    assert "no certificate the CA returned is for the CSR's key" in message
    _, sep, fix = message.partition("CSR's key")[2].rpartition("; ")
    assert sep and fix.strip(), "the error says what the operator can do"
    assert info.value.reason == "wrong_key"
    assert not info.value.retryable


@dataclass
class Dropping:
    """A CA that leaves a SAN of the CSR out of the certificate it issues."""

    name: str
    connector: Callable[[], Any]
    names: Callable[[], list[str]]
    finish: Callable[[Any, Issued | Pending], Awaitable[Issued]]  # result -> the certificate


def drop_last_san(rewriter: CA) -> Callable[[list[x509.Certificate]], list[x509.Certificate]]:
    def rewrite(certs: list[x509.Certificate]) -> list[x509.Certificate]:
        leaf = certs[0]
        kept = sans(leaf) - {max(sans(leaf))}
        again, _ = rewriter.issue(min(kept), sorted(kept), public_key=leaf.public_key())
        return [again, rewriter.cert]

    return rewrite


@pytest.fixture(params=["est", "libest", *ADCS_KINDS, "acme", "manual"], name="dropping")
def dropping_fixture(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Dropping]:
    """Every kind with a CA that drops a SAN: the EST and AD CS simulators' SAN-ignoring
    profiles, libest's example CA (which copies no extension of the CSR), a portal operator whose certificate lacks a SAN, and for ACME a fault proxy in
    front of Pebble (Pebble itself refuses a CSR whose names differ from the order's)."""
    if request.param == "acme":
        for bad in acme_misbehaving(
            tmp_path, request.getfixturevalue("pebble_chain"), request.getfixturevalue("bind9")
        ):
            bad.fault(rewrite_certificate(drop_last_san(CA.create("SAN-dropping CA"))))
            yield Dropping(
                bad.name, bad.connector,
                lambda bad=bad: [*bad.names(), f"dropped-{secrets.token_hex(3)}.{ZONE}"],
                until_issued,
            )  # fmt: skip
        return
    for h in make_harness(request.param, request, tmp_path, monkeypatch):
        assert h.drop_sans is not None
        h.drop_sans()
        yield Dropping(h.name, lambda h=h: h.connector(), h.names, h.issued)


async def test_a_dropped_san_is_reported_by_the_connector(dropping: Dropping) -> None:
    """Every kind compares the certificate with the CSR (one shared function) and names the
    SAN the CA left out; validate, the pipeline's step before anything is installed, refuses
    the certificate all the same."""
    names = dropping.names()
    csr = make_csr(*names)
    conn = dropping.connector()
    with capture_logs() as logs:
        issued = await dropping.finish(conn, await conn.submit(csr))
    lost = set(names) - sans(issued.leaf)
    assert lost, "the CA was to leave a SAN out"
    assert issued.dropped is not None
    assert sorted(issued.dropped.sans) == sorted(f"DNS:{n}" for n in lost)
    assert issued.dropped.breaks_service
    assert [e["dropped"] for e in logs if e["event"] == "ca.dropped"] == [issued.dropped.describe()]
    plan = Plan("expe", None, None, tuple(sorted(names)), ())
    problems = validate(
        plan, Issuance(issued.leaf, issued.chain, csr, dropping.name), utcnow(), issued.chain[-1:]
    )
    assert "san-mismatch" in [p.check for p in problems]
    assert any(max(lost) in p.message for p in problems)


async def test_a_full_certificate_is_reported_with_nothing_dropped(ca: Harness) -> None:
    conn = ca.connector()
    issued = await ca.issued(conn, await conn.submit(make_csr(*ca.names())))
    assert issued.dropped is not None and not issued.dropped.breaks_service


@dataclass
class Slow:
    """A CA that can be made slower than the connector's `timeout` (1 second here)."""

    name: str
    connector: Callable[[], Any]
    names: Callable[[], list[str]]
    stall: Callable[[float], None]  # from now on the CA's answers to requests take this long


@pytest.fixture(params=["est", "acme"], name="slow")
def slow_fixture(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Slow]:
    if request.param == "acme":
        for bad in acme_misbehaving(
            tmp_path, request.getfixturevalue("pebble_chain"), request.getfixturevalue("bind9")
        ):

            def stall_orders(seconds: float, bad: Misbehaving = bad) -> None:
                bad.fault(stall_on("/my-order/", seconds))

            yield Slow(bad.name, lambda bad=bad: bad.connector(timeout=1), bad.names, stall_orders)
        return
    for h in est_harness(tmp_path):
        monkeypatch.setenv("CERTD_TEST_SECRET", h.secret)
        sim = h.server
        proxy = FaultProxy(f"https://127.0.0.1:{sim.port}", sim.trust_anchor, tmp_path).start()

        def connector(h: Harness = h, proxy: FaultProxy = proxy, sim: Any = sim) -> Any:
            config = ESTConfig(
                "lab-est", proxy.url + urlsplit(sim.url).path, trust_anchor=proxy.trust_anchor,
                timeout=timedelta(seconds=1), username="est",
                password=Secret("env:CERTD_TEST_SECRET"),
            )  # fmt: skip
            conn = ESTConnector(config, data_dir=tmp_path)
            h.connectors.append(conn)
            return conn

        def stall_enrollments(seconds: float, proxy: FaultProxy = proxy) -> None:
            proxy.fault = stall_on("enroll", seconds)

        try:
            yield Slow("lab-est", connector, h.names, stall_enrollments)
        finally:
            for conn in h.connectors:
                asyncio.run(conn.aclose())
            proxy.stop()


async def test_ca_slower_than_the_timeout_is_a_retryable_error(slow: Slow) -> None:
    slow.stall(3)
    with pytest.raises(CARequestError) as info:
        await slow.connector().submit(make_csr(*slow.names()))
    assert str(info.value).startswith(f"CA '{slow.name}': ")
    assert "timeout" in str(info.value).lower()
    assert info.value.retryable


async def test_ca_that_forgot_its_client_is_used_again_without_an_operator(
    faulty: Misbehaving,
) -> None:
    conn = faulty.connector()
    await until_issued(conn, await conn.submit(make_csr(*faulty.names())))
    faulty.forget()
    csr = make_csr(*faulty.names())
    issued = await until_issued(conn, await conn.submit(csr))
    assert issued.leaf.public_key() == csr.public_key()
    issued.leaf.verify_directly_issued_by(issued.chain[0])


# --- Challenge solvers ----------------------------------------------------------------------
# Every ACME challenge solver: what it publishes is what the CA reads (BIND9 for the DNS-01
# solvers, an HTTP GET for HTTP-01), presenting twice is harmless, cleanup removes it and may be
# repeated, a failure names the CA, and Pebble issues through it.


@dataclass
class SolverCase:
    """One solver with its real verifier, as the solver contract drives it."""

    solver: ChallengeSolver
    broken: ChallengeSolver  # misconfigured: present must fail naming the CA
    published: Callable[[Presentation], list[str]]  # what the CA would read for this answer
    expected: Callable[[Presentation], str]  # the one value it must read
    prepare: Callable[[str], None]  # make a name reachable for the CA (an A record for HTTP-01)


def presentation(host: str) -> Presentation:
    token = secrets.token_urlsafe(16)
    return Presentation(host, token, f"{token}.thumbprint", secrets.token_urlsafe(32))


def http_published(port: int) -> Callable[[Presentation], list[str]]:
    def read(item: Presentation) -> list[str]:
        url = f"http://127.0.0.1:{port}/.well-known/acme-challenge/{item.token}"
        try:
            response = requests.get(url, timeout=5)
        except requests.ConnectionError:
            return []
        return [response.text] if response.status_code == 200 else []

    return read


def hook_script(directory: Path, bind9: Bind9) -> Path:
    """An operator's DNS hook: RFC 2136 updates with dnspython, as a real one might be."""
    hook = directory / "dns-hook.py"
    hook.write_text(
        f"""import os, sys, dns.query, dns.tsigkeyring, dns.update
action, domain, name, value = sys.argv[1:5]
u = dns.update.UpdateMessage("{ZONE}.", keyring=dns.tsigkeyring.from_text(
    {{"{TSIG_KEY}": os.environ["CERTD_TEST_TSIG"]}}), keyalgorithm="hmac-sha256")
if action == "present":
    u.add(name, 60, "TXT", value)
else:
    u.delete(name, "TXT", value)
dns.query.tcp(u, "127.0.0.1", port={bind9.port}, timeout=5)
"""
    )
    return hook


@pytest.fixture(params=["rfc2136", "hook", "http-01"], name="solver_case")
def solver_case_fixture(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    bind9: Bind9,
    pebble: Pebble,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[SolverCase]:
    monkeypatch.setenv("CERTD_TEST_TSIG", bind9.tsig_secret)
    monkeypatch.setenv("CERTD_TEST_BADTSIG", "c2VjcmV0LXRoYXQtaXMtbm90LXRoZS1rZXk=")
    owner = ConnectorBase("solver-ca", "acme")

    def txt(item: Presentation) -> list[str]:
        return bind9.txt(item.txt_name)

    def rfc2136(env: str) -> RFC2136Config:
        return RFC2136Config(
            "127.0.0.1", bind9.port, ZONE + ".", TSIG_KEY, Secret(f"env:{env}"),
            propagation_timeout=timedelta(seconds=10),
        )  # fmt: skip

    case: SolverCase
    if request.param == "rfc2136":
        case = SolverCase(
            RFC2136Solver(owner, rfc2136("CERTD_TEST_TSIG")),
            RFC2136Solver(owner, rfc2136("CERTD_TEST_BADTSIG")),
            txt, lambda item: item.txt_value, lambda host: None,
        )  # fmt: skip
    elif request.param == "hook":
        hook = (sys.executable, str(hook_script(tmp_path, bind9)))
        failing = tmp_path / "failing-hook.sh"
        failing.write_text("#!/bin/sh\necho 'zone is locked' >&2\nexit 4\n")
        failing.chmod(0o755)
        case = SolverCase(
            HookSolver(owner, hook, timedelta(seconds=30)),
            HookSolver(owner, (str(failing),), timedelta(seconds=30)),
            txt, lambda item: item.txt_value, lambda host: None,
        )  # fmt: skip
    else:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy_port = taken.getsockname()[1]
            case = SolverCase(
                HTTP01Responder(owner, "127.0.0.1", pebble.http_port),
                HTTP01Responder(owner, "127.0.0.1", busy_port),
                http_published(pebble.http_port), lambda item: item.key_authorization,
                bind9.add_a,
            )  # fmt: skip
            yield case
            asyncio.run(case.solver.aclose())
            return
    yield case
    asyncio.run(case.solver.aclose())


async def test_solver_publishes_what_the_ca_reads_once_and_cleans_up(
    solver_case: SolverCase,
) -> None:
    item = presentation(f"s-{secrets.token_hex(4)}.{ZONE}")
    solver = solver_case.solver

    async def published() -> list[str]:  # read from a thread: the responder serves in this loop
        return await asyncio.to_thread(solver_case.published, item)

    assert await published() == []
    await solver.present(item)
    assert await published() == [solver_case.expected(item)]
    await solver.present(item)  # a new process presents again: harmless
    assert await published() == [solver_case.expected(item)]
    await solver.cleanup(item)
    assert await published() == []
    await solver.cleanup(item)  # already gone: no error


async def test_solver_failure_names_the_ca(solver_case: SolverCase) -> None:
    item = presentation(f"s-{secrets.token_hex(4)}.{ZONE}")
    with pytest.raises(CAError) as info:
        await solver_case.broken.present(item)
    assert str(info.value).startswith("CA 'solver-ca': ")
    assert "c2VjcmV0" not in str(info.value)


async def test_pebble_issues_through_the_solver(
    solver_case: SolverCase, pebble: Pebble, bind9: Bind9, tmp_path: Path
) -> None:
    harness = acme_harness(tmp_path, pebble, bind9)
    os.environ["CERTD_TEST_SECRET"] = harness.secret
    config = harness.make_config("CERTD_TEST_SECRET", None)
    conn = ACMEConnector(config, data_dir=tmp_path, solver=solver_case.solver)
    host = f"s-{secrets.token_hex(4)}.{ZONE}"
    solver_case.prepare(host)
    csr = make_csr(host)
    issued = await until_issued(conn, await conn.submit(csr))
    assert issued.leaf.public_key() == csr.public_key()
    assert sans(issued.leaf) == {host}


# --- A CA that forgot a pending request -----------------------------------------------------


@dataclass
class Forgetful:
    """A CA that can lose what it knew about a pending request (database restored, CA reset)."""

    harness: Harness
    forget: Callable[[], None]
    # True: the connector gets the certificate anyway (EST sends the CSR again, ACME registers
    # again and re-creates the order); False: it fails naming the CA and saying to submit again.
    recovers: bool


@pytest.fixture(params=["est", "libest", *ADCS_KINDS, "acme"], name="forgetful")
def forgetful_fixture(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Forgetful]:
    if request.param == "acme":
        pebble = request.getfixturevalue("pebble_chain")
        h = acme_harness(tmp_path, pebble, request.getfixturevalue("bind9"), name="forgetful")
        yield Forgetful(h, pebble.restart, True)
        for conn in h.connectors:
            await_close(conn)
        return
    for h in make_harness(request.param, request, tmp_path, monkeypatch):
        # libest: a restarted estserver has forgotten the CSRs its -m mode has seen
        forget = h.forget if h.forget is not None else h.server.requests.clear
        yield Forgetful(h, forget, h.kind == "est")


def await_close(conn: Any) -> None:
    asyncio.run(conn.aclose())


async def test_a_forgotten_pending_request_is_recovered_or_reported(forgetful: Forgetful) -> None:
    harness = forgetful.harness
    harness.set_manual(True)
    conn = harness.connector(wait=0)
    csr = make_csr(*harness.names())
    pending = await conn.submit(csr)
    assert isinstance(pending, Pending)
    forgetful.forget()
    harness.set_manual(False)  # the reset CA issues what reaches it from now on
    harness.approve()
    outcome: Issued | CAError
    try:
        outcome = await until_issued(conn, await conn.poll(pending.handle))
    except CAError as exc:
        outcome = exc
    if forgetful.recovers:
        assert isinstance(outcome, Issued), outcome
        assert outcome.leaf.public_key() == csr.public_key()
    else:
        assert isinstance(outcome, CAError)
        assert str(outcome).startswith(f"CA '{harness.name}': ")
        assert "submit the CSR again" in str(outcome)
