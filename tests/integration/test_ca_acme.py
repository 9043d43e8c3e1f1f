"""ACME against real Pebble: DNS-01 through BIND9 (RFC 2136 + TSIG), the hook solver, the
HTTP-01 responder, random badNonce rejections, EAB, the persisted account key, and account
recovery after Pebble forgot the account (a restart) or the account was deactivated."""

from __future__ import annotations

import json
import secrets
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from acme import client, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from josepy.jwa import ES256
from josepy.jwk import JWK

from expressway_certd.monitor.config import Secret
from expressway_certd.monitor.durations import utcnow
from expressway_certd.monitor.errors import CAError
from expressway_certd.monitor.events import AcmeAccountRecreated, Event
from expressway_certd.renewers.ca.acme import ACMEConnector
from expressway_certd.renewers.ca.acme_config import ACMEConfig, RFC2136Config
from expressway_certd.renewers.ca.base import Issued, Pending
from tests.integration.ca_faults import pebble_proxy, rate_limited_once
from tests.integration.ca_servers import (
    TSIG_KEY,
    ZONE,
    Bind9,
    Pebble,
    free_port,
    make_csr,
    start_pebble,
    until_issued,
)

pytestmark = pytest.mark.integration


def rfc2136(bind9: Bind9, secret_env: str = "CERTD_TEST_TSIG") -> RFC2136Config:
    return RFC2136Config(
        "127.0.0.1", bind9.port, None, TSIG_KEY, Secret(f"env:{secret_env}"),
        propagation_timeout=timedelta(seconds=5),
    )  # fmt: skip


def acme_config(pebble: Pebble, bind9: Bind9, **changes: object) -> ACMEConfig:
    base: dict[str, object] = {
        "name": "pebble",
        "directory": pebble.directory_url,
        "trust_anchor": pebble.trust_anchor,
        "eab_kid": pebble.eab_kid,
        "eab_hmac": Secret("env:CERTD_TEST_EAB") if pebble.eab_hmac else None,
        "rfc2136": rfc2136(bind9),
    }
    base.update(changes)
    return ACMEConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch, bind9: Bind9, pebble: Pebble) -> None:
    monkeypatch.setenv("CERTD_TEST_TSIG", bind9.tsig_secret)
    monkeypatch.setenv("CERTD_TEST_EAB", pebble.eab_hmac or "")


def names() -> list[str]:
    return [f"acme-{secrets.token_hex(4)}.{ZONE}"]


async def test_dns01_record_is_removed_after_issuance(
    pebble: Pebble, bind9: Bind9, tmp_path: Path
) -> None:
    conn = ACMEConnector(acme_config(pebble, bind9), data_dir=tmp_path)
    host = names()[0]
    issued = await conn.submit(make_csr(host))
    assert isinstance(issued, Issued)
    assert bind9.txt(f"_acme-challenge.{host}") == []
    issued.leaf.verify_directly_issued_by(issued.chain[0])
    await conn.aclose()


async def test_account_key_is_created_once_0600_and_reused(
    pebble: Pebble, bind9: Bind9, tmp_path: Path
) -> None:
    first = ACMEConnector(acme_config(pebble, bind9), data_dir=tmp_path)
    await until_issued(first, await first.submit(make_csr(*names())))
    key_file = tmp_path / "acme" / "pebble" / "account.key"
    account = tmp_path / "acme" / "pebble" / "account.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(account.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    key_before, account_before = key_file.read_bytes(), account.read_text()

    second = ACMEConnector(acme_config(pebble, bind9), data_dir=tmp_path)
    await until_issued(second, await second.submit(make_csr(*names())))
    assert key_file.read_bytes() == key_before
    assert account.read_text() == account_before
    assert first.request_count("new_account") == 1
    assert second.request_count("new_account") == 0  # the saved account is used as it is


async def test_eab_required_without_eab_says_what_to_set(
    pebble: Pebble, bind9: Bind9, tmp_path: Path
) -> None:
    conn = ACMEConnector(acme_config(pebble, bind9, eab_kid=None, eab_hmac=None), data_dir=tmp_path)
    with pytest.raises(
        CAError, match="CA 'pebble': account: the CA requires External Account Binding; set eab_kid"
    ):
        await conn.submit(make_csr(*names()))


async def test_wrong_tsig_secret_names_the_dns_step_and_fix(
    pebble: Pebble, bind9: Bind9, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CERTD_TEST_BADTSIG", "c2VjcmV0LXRoYXQtaXMtbm90LXRoZS1rZXk=")
    conn = ACMEConnector(
        acme_config(pebble, bind9, rfc2136=rfc2136(bind9, "CERTD_TEST_BADTSIG")), data_dir=tmp_path
    )
    with pytest.raises(CAError) as info:
        await conn.submit(make_csr(*names()))
    message = str(info.value)
    assert message.startswith("CA 'pebble': dns-01 ")
    assert "tsig" in message.lower()
    assert "c2VjcmV0" not in message


async def test_hook_solver_runs_present_and_cleanup(
    pebble: Pebble, bind9: Bind9, tmp_path: Path
) -> None:
    log = tmp_path / "hook.log"
    hook = tmp_path / "hook.py"
    hook.write_text(
        f"""import sys, dns.query, dns.tsigkeyring, dns.update, os
action, domain, name, value = sys.argv[1:5]
open({str(log)!r}, "a").write(f"{{action}} {{domain}} {{name}} {{value}}\\n")
u = dns.update.UpdateMessage("{ZONE}.", keyring=dns.tsigkeyring.from_text({{"{TSIG_KEY}": os.environ["CERTD_TEST_TSIG"]}}), keyalgorithm="hmac-sha256")
(u.add if action == "present" else u.delete)(name, *( [60, "TXT", value] if action == "present" else ["TXT", value]))
dns.query.tcp(u, "127.0.0.1", port={bind9.port}, timeout=5)
"""
    )
    config = acme_config(
        pebble, bind9, challenge="hook", rfc2136=None, hook=(sys.executable, str(hook))
    )
    conn = ACMEConnector(config, data_dir=tmp_path)
    host = names()[0]
    await until_issued(conn, await conn.submit(make_csr(host)))
    actions = [line.split()[:3] for line in log.read_text().splitlines()]
    assert actions == [
        ["present", host, f"_acme-challenge.{host}."],
        ["cleanup", host, f"_acme-challenge.{host}."],
    ]


async def test_failing_hook_reports_its_output(
    pebble: Pebble, bind9: Bind9, tmp_path: Path
) -> None:
    hook = tmp_path / "hook.sh"
    hook.write_text("#!/bin/sh\necho 'zone is locked' >&2\nexit 4\n")
    hook.chmod(0o755)
    config = acme_config(pebble, bind9, challenge="hook", rfc2136=None, hook=(str(hook),))
    conn = ACMEConnector(config, data_dir=tmp_path)
    with pytest.raises(CAError, match=r"hook present: .* exited with 4: zone is locked"):
        await conn.submit(make_csr(*names()))


async def test_http01_responder_answers_pebble(
    pebble: Pebble, bind9: Bind9, tmp_path: Path
) -> None:
    host = names()[0]
    bind9.add_a(host)
    config = acme_config(
        pebble,
        bind9,
        challenge="http-01",
        rfc2136=None,
        http01_listen=("127.0.0.1", pebble.http_port),
    )
    conn = ACMEConnector(config, data_dir=tmp_path)
    try:
        issued = await until_issued(conn, await conn.submit(make_csr(host)))
        assert issued.leaf.public_key() is not None
    finally:
        await conn.aclose()


async def test_issues_while_pebble_rejects_nonces_at_random(
    pebble_nonce_reject: Pebble, bind9: Bind9, tmp_path: Path
) -> None:
    config = acme_config(pebble_nonce_reject, bind9, name="pebble-nonce")
    # The acme library retries a bad nonce once by itself; the connector's own retry is seen
    # only when both fail (about 16% of requests), so two orders saw none in ~7% of runs.
    # Orders go on until one needed it (at most ten: all ten without is about 1 in 500,000).
    retries = orders = 0
    while retries == 0 and orders < 10:
        conn = ACMEConnector(config, data_dir=tmp_path)
        issued = await until_issued(conn, await conn.submit(make_csr(*names())))
        assert isinstance(issued, Issued)
        retries += conn.request_count("bad_nonce_retry")
        orders += 1
    assert retries > 0, "Pebble rejects 40% of nonces; the connector must have retried"


async def test_failed_validation_reports_the_ca_reason_and_cleans_up(
    pebble: Pebble, bind9: Bind9, tmp_path: Path
) -> None:
    host = names()[0]
    bind9.add_a(host)
    wrong_port = free_port()  # Pebble dials http_port; nothing answers there for this name
    config = acme_config(
        pebble, bind9, challenge="http-01", rfc2136=None, http01_listen=("127.0.0.1", wrong_port)
    )
    conn = ACMEConnector(config, data_dir=tmp_path, wait=timedelta(seconds=20))
    try:
        with pytest.raises(CAError) as info:
            await conn.submit(make_csr(host))
    finally:
        await conn.aclose()
    message = str(info.value)
    assert message.startswith("CA 'pebble': order: the order failed: ")
    assert host in message or "connection" in message.lower()


@pytest.fixture(name="own_pebble")
def own_pebble_server(tmp_path_factory: pytest.TempPathFactory, bind9: Bind9) -> Iterator[Pebble]:
    """A Pebble of its own, for tests that restart it (the session one serves the others)."""
    server = start_pebble(tmp_path_factory.mktemp("pebble-own"), bind9.port, eab=True)
    try:
        yield server
    finally:
        server.proc.terminate()
        server.proc.wait(10)


class Recorder:
    """Collects published events, as the daemon's EventBus.publish receives them."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.events.append(event)


def own_config(server: Pebble, bind9: Bind9, monkeypatch: pytest.MonkeyPatch) -> ACMEConfig:
    monkeypatch.setenv("CERTD_TEST_OWN_EAB", server.eab_hmac or "")
    return acme_config(server, bind9, eab_hmac=Secret("env:CERTD_TEST_OWN_EAB"))


def saved_account(data_dir: Path) -> tuple[str, bytes]:
    state = data_dir / "acme" / "pebble"
    for name in ("account.json", "account.key"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600
    return json.loads((state / "account.json").read_text())["uri"], (
        state / "account.key"
    ).read_bytes()


async def test_pebble_restarted_between_two_orders_registers_again_with_the_same_key(
    own_pebble: Pebble, bind9: Bind9, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    conn = ACMEConnector(
        own_config(own_pebble, bind9, monkeypatch), data_dir=tmp_path, events=recorder
    )
    await until_issued(conn, await conn.submit(make_csr(*names())))
    uri_before, key_before = saved_account(tmp_path)

    own_pebble.restart()  # Pebble keeps accounts in memory: this one is forgotten
    config = own_config(own_pebble, bind9, monkeypatch)
    [account] = [
        r for r in await ACMEConnector(config, data_dir=tmp_path).check() if r.step == "account"
    ]
    assert "no longer accepts" in account.detail and "accountDoesNotExist" in account.detail
    assert saved_account(tmp_path) == (uri_before, key_before)  # ca-check changes nothing
    csr = make_csr(*names())
    issued = await until_issued(conn, await conn.submit(csr))

    assert issued.leaf.public_key() == csr.public_key()
    issued.leaf.verify_directly_issued_by(issued.chain[0])
    uri_after, key_after = saved_account(tmp_path)
    assert uri_after != uri_before
    assert key_after == key_before
    [event] = recorder.events
    assert isinstance(event, AcmeAccountRecreated)
    assert (event.target, event.cause, event.new_key, event.order) == (
        "ca:pebble",
        "accountDoesNotExist",
        False,
        "none",
    )
    assert (event.old_account, event.new_account) == (uri_before, uri_after)
    await conn.aclose()


async def test_order_pending_across_a_pebble_restart_is_re_created_by_the_next_process(
    own_pebble: Pebble, bind9: Bind9, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = own_config(own_pebble, bind9, monkeypatch)
    first = ACMEConnector(config, data_dir=tmp_path, wait=timedelta(0))
    csr = make_csr(*names())
    pending = await first.submit(csr)
    assert isinstance(pending, Pending)
    old_order = pending.handle["order_url"]
    await first.aclose()

    own_pebble.restart()
    recorder = Recorder()
    second = ACMEConnector(config, data_dir=tmp_path, events=recorder)
    issued = await until_issued(second, await second.poll(pending.handle))
    assert issued.leaf.public_key() == csr.public_key()
    assert second.request_count("new_order") == 1  # the lost order was made again
    [event] = recorder.events
    assert isinstance(event, AcmeAccountRecreated)
    assert (event.cause, event.order) == ("accountDoesNotExist", "re-created")
    assert old_order not in json.dumps(event.payload())  # order URLs are not account facts
    await second.aclose()


T = TypeVar("T")


def nonce_retried(call: Callable[[], T], tries: int = 5) -> T:
    """`call()` (a request of the acme library) again while Pebble answers badNonce. Pebble
    refuses 5% of good nonces on purpose (PEBBLE_WFE_NONCEREJECT) and the library retries a
    badNonce once, so two in a row fail a test now and then; RFC 8555 6.5 has the client
    retry with the fresh nonce. Any other error is raised at once."""
    for _ in range(tries - 1):
        try:
            return call()
        except messages.Error as exc:
            if exc.code != "badNonce":
                raise
    return call()


async def test_deactivated_account_is_replaced_with_a_new_key(
    own_pebble: Pebble, bind9: Bind9, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    config = own_config(own_pebble, bind9, monkeypatch)
    conn = ACMEConnector(config, data_dir=tmp_path, events=recorder)
    await until_issued(conn, await conn.submit(make_csr(*names())))
    uri_before, key_before = saved_account(tmp_path)

    # Someone deactivates the account (RFC 8555 7.3.6) with its key, through the acme library.
    key = JWK.load(key_before)
    net = client.ClientNetwork(key, alg=ES256, verify_ssl=str(own_pebble.trust_anchor))
    net.account = messages.RegistrationResource(uri=uri_before, body=messages.Registration())
    admin = client.ClientV2(client.ClientV2.get_directory(own_pebble.directory_url, net), net)
    deactivated = nonce_retried(lambda: admin.deactivate_registration(net.account))
    assert deactivated.body.status == "deactivated"
    # What docs/ca-connectors.md says Pebble answers, and the recovery relies on: the account
    # URL answers unauthorized, and the same key cannot register again.
    with pytest.raises(messages.Error) as refused:
        nonce_retried(lambda: admin.query_registration(net.account))
    assert refused.value.code == "unauthorized" and "deactivated" in str(refused.value.detail)
    registration = messages.NewRegistration.from_data(terms_of_service_agreed=True)
    with pytest.raises(messages.Error) as again:
        nonce_retried(lambda: admin.new_account(registration))
    assert again.value.code == "unauthorized" and "deactivated" in str(again.value.detail)

    csr = make_csr(*names())
    issued = await until_issued(conn, await conn.submit(csr))
    assert issued.leaf.public_key() == csr.public_key()
    uri_after, key_after = saved_account(tmp_path)
    assert uri_after != uri_before
    assert key_after != key_before
    assert serialization.load_pem_private_key(key_after, None) is not None
    [event] = recorder.events
    assert isinstance(event, AcmeAccountRecreated)
    assert event.new_key is True
    assert event.new_account == uri_after
    await conn.aclose()


async def test_rate_limited_finalize_waits_for_retry_after_then_finishes_the_same_order(
    pebble: Pebble, bind9: Bind9, tmp_path: Path
) -> None:
    proxy = pebble_proxy(pebble.directory_url, pebble.trust_anchor, tmp_path)
    fault = rate_limited_once("finalize", "120")
    proxy.fault = fault
    config = acme_config(
        pebble, bind9, directory=proxy.directory_url, trust_anchor=proxy.trust_anchor
    )
    conn = ACMEConnector(config, data_dir=tmp_path)
    csr = make_csr(*names())
    try:
        pending = await conn.submit(csr)
        assert isinstance(pending, Pending), pending
        assert fault.hits == 1  # type: ignore[attr-defined]
        assert "rate limited by the CA" in pending.reason
        assert timedelta(seconds=100) < pending.retry_at - utcnow() <= timedelta(seconds=120)
        order_url = pending.handle["order_url"]
        assert order_url

        issued = await until_issued(conn, await conn.poll(pending.handle))
        assert issued.leaf.public_key() == csr.public_key()
        assert conn.request_count("new_order") == 1  # the same order, finalized on the poll
    finally:
        await conn.aclose()
        proxy.stop()


def openssl_text(cert: x509.Certificate) -> str:
    """The certificate as Debian's openssl reads it (names in RFC 2253 form)."""
    return subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-nameopt", "RFC2253"],
        input=cert.public_bytes(serialization.Encoding.PEM),
        capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip


async def test_what_pebble_really_drops_is_reported(
    pebble: Pebble, bind9: Bind9, tmp_path: Path
) -> None:
    """An ACME CA cannot drop a SAN (finalize refuses a CSR whose names differ from the
    order's), but it makes its own profile: Pebble keeps only the CN of the subject, issues
    serverAuth + clientAuth and digitalSignature + keyEncipherment whatever the CSR asks.
    What the connector reports as dropped is checked against Debian's openssl reading the
    certificate, not against our parser."""
    host = names()[0]
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, host),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Org"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "Oslo"),
    ])  # fmt: skip
    eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), False)
        .add_extension(x509.ExtendedKeyUsage([*eku, ExtendedKeyUsageOID.CODE_SIGNING]), False)
        .add_extension(
            x509.KeyUsage(True, False, False, False, True, False, False, False, False), True
        )  # digitalSignature, keyAgreement
        .sign(key, hashes.SHA256())
    )
    conn = ACMEConnector(acme_config(pebble, bind9), data_dir=tmp_path)
    issued = await until_issued(conn, await conn.submit(csr))
    await conn.aclose()
    text = openssl_text(issued.leaf)
    assert f"Subject: CN={host}\n" in text  # O and L are gone
    assert "TLS Web Server Authentication, TLS Web Client Authentication\n" in text
    assert "Code Signing" not in text and "Key Agreement" not in text
    assert "Digital Signature" in text
    assert issued.dropped is not None
    assert issued.dropped.sans == ()
    assert issued.dropped.ekus == ("1.3.6.1.5.5.7.3.3",)  # codeSigning
    assert issued.dropped.key_usages == ("keyAgreement",)
    assert sorted(issued.dropped.subject) == ["L=Oslo", "O=Example Org"]
