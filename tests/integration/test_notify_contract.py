"""One contract for every notifier, each against a real receiver on loopback.

Alertmanager is the Debian `prometheus-alertmanager` server; e-mail goes to an aiosmtpd SMTP
server; Webex and the webhook go to aiohttp servers that check what the real services check
(Bearer token and JSON body; HMAC signature of the exact body).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import json
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from expressway_certd_lab.pki import CA, write_key_and_chain
from expressway_certd_lab.tls import server_context
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from expressway_certd.alerts.notifiers import build_router
from expressway_certd.alerts.notify import Router
from expressway_certd.config import load_config
from expressway_certd.monitor.config import Secret
from expressway_certd.monitor.config_notify import (
    AlertmanagerConfig,
    EmailConfig,
    NotifierConfig,
    Routing,
    WebexConfig,
    WebhookConfig,
)
from expressway_certd.monitor.events import (
    Event,
    EventBus,
    ProbeFailed,
    ProbeRecovered,
    RenewalCompleted,
    StageFailed,
    StageSucceeded,
)
from tests.helpers import free_port, need_binary

pytestmark = pytest.mark.integration

WEBEX_TOKEN = "wbx-Zm9vYmFyLXNlY3JldC10b2tlbg"
HOOK_SECRET = "hmac-key-7f3a9c"
HOOK_AUTH = "Bearer hook-auth-d41d8cd9"
SMTP_PASSWORD = "smtp-pass-5e884898"
SECRETS = (WEBEX_TOKEN, HOOK_SECRET, HOOK_AUTH, SMTP_PASSWORD)
FAST = Routing(events=None, timeout=timedelta(seconds=5), retries=0)


@dataclass
class Delivery:
    """What one receiver got, normalised: status and all the human-readable text."""

    status: str  # firing | resolved | info
    text: str
    raw: Any = None


# -- Alertmanager --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = need_binary("prometheus-alertmanager")
    workdir = tmp_path_factory.mktemp("alertmanager")
    config = workdir / "alertmanager.yml"
    config.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    port = free_port()
    log = (workdir / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip: a single instance
        ],
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(base + "/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(
                f"alertmanager did not start:\n{(workdir / 'alertmanager.log').read_text()}"
            )
        time.sleep(0.1)
    yield base
    proc.terminate()
    proc.wait(10)
    log.close()


async def active_alerts(base: str, target: str) -> list[dict[str, Any]]:
    params = {"filter": f'target="{target}"'}
    async with aiohttp.ClientSession() as s, s.get(base + "/api/v2/alerts", params=params) as r:
        assert r.status == 200
        alerts: list[dict[str, Any]] = await r.json()
        return alerts


class AlertmanagerReceiver:
    def __init__(self, base: str) -> None:
        self.base = base
        self.targets: set[str] = set()

    def config(self, name: str, routing: Routing) -> NotifierConfig:
        return AlertmanagerConfig(name=name, url=self.base, routing=routing)

    def down(self, name: str, routing: Routing) -> NotifierConfig:
        return AlertmanagerConfig(name=name, url=f"http://127.0.0.1:{free_port()}", routing=routing)

    async def deliveries(self, target: str) -> list[Delivery]:
        # Alertmanager lists active alerts only: a resolved alert disappears.
        return [
            Delivery(
                a["status"]["state"] == "active" and "firing",
                json.dumps(a["labels"])
                + a["annotations"].get("summary", "")
                + a["annotations"].get("description", ""),
                a,
            )
            for a in await active_alerts(self.base, target)
        ]


# -- Webex and webhook: aiohttp servers checking what the real services check -----------------


@dataclass
class HTTPStub:
    port: int = 0
    webex: list[dict[str, Any]] = field(default_factory=list)
    hooks: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    async def webex_messages(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {WEBEX_TOKEN}":
            self.rejected.append("webex: bad token")
            return web.json_response(
                {"message": "The request requires a valid access token"}, status=401
            )
        body = await request.json()
        if set(body) != {"roomId", "markdown"} or body["roomId"] != "room-1":
            self.rejected.append(f"webex: bad body {body}")
            return web.json_response({"message": "roomId required"}, status=400)
        self.webex.append(body)
        return web.json_response({"id": f"msg{len(self.webex)}", **body})

    async def hook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        expected = "sha256=" + hmac.new(HOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        if request.headers.get("X-Certd-Signature") != expected:
            self.rejected.append("hook: bad signature")
            return web.Response(status=403)
        if request.headers.get("Authorization") != HOOK_AUTH:
            self.rejected.append("hook: bad auth header")
            return web.Response(status=401)
        self.hooks.append((dict(request.headers), raw))
        return web.Response(status=204)


@pytest.fixture
async def http_stub() -> AsyncIterator[HTTPStub]:
    stub = HTTPStub()
    app = web.Application()
    app.router.add_post("/v1/messages", stub.webex_messages)
    app.router.add_post("/hooks/T0KENINPATH", stub.hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    stub.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield stub
    await runner.cleanup()


class WebexReceiver:
    def __init__(self, stub: HTTPStub) -> None:
        self.stub = stub

    def config(self, name: str, routing: Routing) -> NotifierConfig:
        return WebexConfig(
            name=name,
            token=Secret("env:CERTD_TEST_WEBEX_TOKEN", "notifier[0].token"),
            room_id="room-1",
            api_url=f"http://127.0.0.1:{self.stub.port}/v1/messages",
            routing=routing,
        )

    def down(self, name: str, routing: Routing) -> NotifierConfig:
        return WebexConfig(
            name=name,
            token=Secret("env:CERTD_TEST_WEBEX_TOKEN"),
            room_id="room-1",
            api_url=f"http://127.0.0.1:{free_port()}/v1/messages",
            routing=routing,
        )

    async def deliveries(self, target: str) -> list[Delivery]:
        out = []
        for body in self.stub.webex:
            text = body["markdown"]
            if f"target: `{target}`" in text:
                status = "resolved" if "[RESOLVED]" in text else "firing"
                out.append(Delivery(status, text, body))
        return out


class WebhookReceiver:
    def __init__(self, stub: HTTPStub) -> None:
        self.stub = stub

    def config(self, name: str, routing: Routing) -> NotifierConfig:
        return WebhookConfig(
            name=name,
            url=f"http://127.0.0.1:{self.stub.port}/hooks/T0KENINPATH",
            secret=Secret("env:CERTD_TEST_HOOK_SECRET"),
            headers=(("Authorization", Secret("env:CERTD_TEST_HOOK_AUTH")), ("X-Team", "uc")),
            routing=routing,
        )

    def down(self, name: str, routing: Routing) -> NotifierConfig:
        return WebhookConfig(
            name=name, url=f"http://127.0.0.1:{free_port()}/hooks/T0KENINPATH", routing=routing
        )

    async def deliveries(self, target: str) -> list[Delivery]:
        out = []
        for headers, raw in self.stub.hooks:
            doc = json.loads(raw)
            assert headers["X-Team"] == "uc"
            if doc["target"] == target:
                out.append(Delivery(doc["status"], raw.decode(), doc))
        return out


# -- E-mail: aiosmtpd, with STARTTLS and AUTH like a real submission server --------------------


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        self.messages.append(msg)  # type: ignore[arg-type]
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == b"certd"
            and data.password == SMTP_PASSWORD.encode()
        )
        if ok:
            self.logins.append(mechanism)
        return AuthResult(success=ok)


@pytest.fixture(scope="module")
def smtp_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = CA.create("SMTP Test Root")
    leaf, key = root.issue("localhost", ["localhost", "127.0.0.1"], key_kind="ec", key_size=256)
    assert key is not None
    directory = tmp_path_factory.mktemp("smtp")
    cert_file, key_file = write_key_and_chain(directory, "smtp", leaf, key, [])
    return root.write_bundle(directory / "root.pem"), server_context(cert_file, key_file)


@pytest.fixture
def mailbox(smtp_tls: tuple[Path, Any]) -> Iterator[tuple[Mailbox, int]]:
    _, context = smtp_tls
    box = Mailbox()
    port = free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=box.authenticate,
        auth_required=True,
    )
    controller.start()
    yield box, port
    controller.stop()


class EmailReceiver:
    def __init__(self, box: Mailbox, port: int, trust: Path) -> None:
        self.box = box
        self.port = port
        self.trust = trust

    def config(self, name: str, routing: Routing) -> NotifierConfig:
        return EmailConfig(
            name=name,
            host="127.0.0.1",
            port=self.port,
            starttls=True,
            username="certd",
            password=Secret("env:CERTD_TEST_SMTP_PASSWORD"),
            sender="certd@example.com",
            to=("uc-team@example.com", "noc@example.com"),
            trust_anchor=self.trust,
            routing=routing,
        )

    def down(self, name: str, routing: Routing) -> NotifierConfig:
        return EmailConfig(
            name=name,
            host="127.0.0.1",
            port=free_port(),
            starttls=False,
            sender="certd@example.com",
            to=("noc@example.com",),
            routing=routing,
        )

    async def deliveries(self, target: str) -> list[Delivery]:
        out = []
        for msg in self.box.messages:
            body = msg.get_content().replace("\r\n", "\n")  # type: ignore[attr-defined]
            if f"target: {target}\n" in body:
                subject = str(msg["Subject"])
                status = "resolved" if "[RESOLVED]" in subject else "firing"
                out.append(Delivery(status, subject + "\n" + body, msg))
        return out


# -- the contract ----------------------------------------------------------------------------

KINDS = ["alertmanager", "webex", "webhook", "email"]


@pytest.fixture(params=KINDS)
def receiver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CERTD_TEST_WEBEX_TOKEN", WEBEX_TOKEN)
    monkeypatch.setenv("CERTD_TEST_HOOK_SECRET", HOOK_SECRET)
    monkeypatch.setenv("CERTD_TEST_HOOK_AUTH", HOOK_AUTH)
    monkeypatch.setenv("CERTD_TEST_SMTP_PASSWORD", SMTP_PASSWORD)
    kind = request.param
    if kind == "alertmanager":
        return AlertmanagerReceiver(request.getfixturevalue("alertmanager"))
    if kind == "webex":
        return WebexReceiver(request.getfixturevalue("http_stub"))
    if kind == "webhook":
        return WebhookReceiver(request.getfixturevalue("http_stub"))
    box, port = request.getfixturevalue("mailbox")
    trust, _ = request.getfixturevalue("smtp_tls")
    return EmailReceiver(box, port, trust)


_seq = iter(range(10_000))


def unique_target() -> str:
    return f"expc{next(_seq)}-{int(time.time() * 1000) % 100000}"


def now() -> datetime:
    return datetime.now(UTC)


def failed(target: str, stage: str = "submit", rid: str = "r-1") -> StageFailed:
    return StageFailed(
        target=target,
        time=now(),
        renewal_id=rid,
        stage=stage,
        why="CA 'corp-adcs' answered 503; the connector retries",
        retry_at="2026-11-28T03:00:00+00:00",
    )


async def wait_for(
    get: Callable[[], Awaitable[list[Any]]], ok: Callable[[list[Any]], bool], timeout: float = 5.0
) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        got = await get()
        if ok(got) or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


async def publish(router: Router, *events: Event) -> None:
    for event in events:
        await router.publish(event)
    await router.join()


@pytest.fixture
async def router_for() -> AsyncIterator[
    Callable[[NotifierConfig], tuple[Router, CollectorRegistry]]
]:
    """router_for(config) -> (router, registry); every router is closed at teardown."""
    routers: list[Router] = []

    def make(config: NotifierConfig) -> tuple[Router, CollectorRegistry]:
        registry = CollectorRegistry()
        routers.append(build_router([config], registry=registry, backoff=0))
        return routers[-1], registry

    yield make
    for router in routers:
        await router.aclose()


def sent(registry: CollectorRegistry, config: NotifierConfig, result: str) -> float | None:
    return registry.get_sample_value(
        "expressway_notifications_total",
        {"notifier": config.name, "kind": config.kind, "result": result},
    )


async def test_problem_arrives_with_target_and_summary(receiver: Any, router_for: Any) -> None:
    config = receiver.config("contract", FAST)
    router, registry = router_for(config)
    target = unique_target()
    event = failed(target)
    with capture_logs() as logs:
        await publish(router, event)
    got = await wait_for(lambda: receiver.deliveries(target), lambda d: len(d) >= 1)
    assert len(got) == 1, got
    assert got[0].status == "firing"
    assert target in got[0].text
    assert event.summary() in got[0].text.replace("\n", " ") or event.why in got[0].text
    assert sent(registry, config, "sent") == 1
    for secret in SECRETS:
        assert secret not in got[0].text
        assert secret not in repr(logs)


async def test_recovery_resolves_the_problem(receiver: Any, router_for: Any) -> None:
    config = receiver.config("contract", FAST)
    router, registry = router_for(config)
    target, other = unique_target(), unique_target()
    await publish(router, failed(target), failed(other))
    await wait_for(lambda: receiver.deliveries(target), lambda d: len(d) >= 1)
    await publish(
        router, StageSucceeded(target=target, time=now(), renewal_id="r-1", stage="submit")
    )
    got = await wait_for(
        lambda: receiver.deliveries(target),
        lambda d: (
            not any(x.status == "firing" for x in d) or any(x.status == "resolved" for x in d)
        ),
    )
    if isinstance(receiver, AlertmanagerReceiver):
        assert got == []  # ended: no longer active
        assert len(await receiver.deliveries(other)) == 1  # the other target's alert stays
    else:
        assert [d.status for d in got] == ["firing", "resolved"]
        assert "stage submit done" in got[1].text
    assert sent(registry, config, "failed") == 0


async def test_duplicates_within_throttle_are_not_delivered(receiver: Any, router_for: Any) -> None:
    config = receiver.config("contract", FAST)
    router, registry = router_for(config)
    target = unique_target()
    await publish(router, failed(target), failed(target), failed(target))
    got = await wait_for(lambda: receiver.deliveries(target), lambda d: len(d) >= 1)
    await asyncio.sleep(0.2)
    got = await receiver.deliveries(target)
    assert len(got) == 1
    assert sent(registry, config, "throttled") == 2


async def test_unreachable_receiver_is_counted_and_logged_without_secrets(
    receiver: Any, router_for: Any
) -> None:
    config = receiver.down("contract-down", FAST)
    router, registry = router_for(config)
    with capture_logs() as logs:
        await publish(router, failed(unique_target()))
    assert sent(registry, config, "failed") == 1
    errors = [e for e in logs if e["event"] == "notice delivery failed"]
    assert errors and errors[0]["error"].startswith("contract-down: ")
    for secret in (*SECRETS, "T0KENINPATH"):
        assert secret not in repr(logs)


# -- per-receiver details ---------------------------------------------------------------------


async def test_alertmanager_labels_and_probe_resolution(alertmanager: str, router_for: Any) -> None:
    config = AlertmanagerConfig(name="am", url=alertmanager, routing=FAST)
    router, _ = router_for(config)
    target = unique_target()
    probe = ProbeFailed(
        target=target,
        time=now(),
        endpoint=f"{target}.example.com:7001",
        service="traversal",
        error_class="handshake",
        error="certificate verify failed",
    )
    await publish(router, probe, failed(target, stage="install", rid="r-9"))
    alerts = await wait_for(lambda: active_alerts(alertmanager, target), lambda d: len(d) >= 2)
    by_name = {a["labels"]["alertname"]: a for a in alerts}
    assert by_name["ExpresswayProbeFailed"]["labels"] == {
        "alertname": "ExpresswayProbeFailed",
        "severity": "warning",
        "target": target,
        "endpoint": f"{target}.example.com:7001",
        "service": "traversal",
    }
    stage = by_name["ExpresswayStageFailed"]
    assert stage["labels"] == {
        "alertname": "ExpresswayStageFailed",
        "severity": "critical",
        "target": target,
        "stage": "install",
        "renewal_id": "r-9",
    }
    assert stage["annotations"]["summary"] == failed(target, "install", "r-9").summary()
    assert "retry_at: 2026-11-28T03:00:00+00:00" in stage["annotations"]["description"]
    assert stage["endsAt"].startswith(str(now().year))  # explicit end: resolve_timeout ahead
    recovered = ProbeRecovered(
        target=target,
        time=now(),
        endpoint=f"{target}.example.com:7001",
        service="traversal",
        previous_error_class="handshake",
    )
    await publish(router, recovered)
    alerts = await wait_for(lambda: active_alerts(alertmanager, target), lambda d: len(d) == 1)
    assert [a["labels"]["alertname"] for a in alerts] == ["ExpresswayStageFailed"]
    completed = RenewalCompleted(
        target=target, time=now(), renewal_id="r-9", new_sha256="ab" * 32, not_after="2027-03-01"
    )
    await publish(router, completed)
    assert await wait_for(lambda: active_alerts(alertmanager, target), lambda d: d == []) == []


async def test_email_envelope_and_headers(
    mailbox: tuple[Mailbox, int],
    smtp_tls: tuple[Path, Any],
    monkeypatch: pytest.MonkeyPatch,
    router_for: Any,
) -> None:
    monkeypatch.setenv("CERTD_TEST_SMTP_PASSWORD", SMTP_PASSWORD)
    receiver = EmailReceiver(*mailbox, smtp_tls[0])
    config = receiver.config("mail", FAST)
    router, _ = router_for(config)
    target = unique_target()
    await publish(router, failed(target))
    got = await wait_for(lambda: receiver.deliveries(target), lambda d: len(d) >= 1)
    msg = got[0].raw
    assert msg["From"] == "certd@example.com"
    assert msg["To"] == "uc-team@example.com, noc@example.com"
    assert str(msg["Subject"]).startswith(f"[expressway-certd] [CRITICAL] {target}: renewal r-1")
    assert receiver.box.envelopes[-1] == (
        "certd@example.com",
        ["uc-team@example.com", "noc@example.com"],
    )
    assert receiver.box.logins  # authenticated, after STARTTLS (the server requires both)


async def test_email_untrusted_server_certificate_is_a_clear_error(
    mailbox: tuple[Mailbox, int], monkeypatch: pytest.MonkeyPatch, router_for: Any
) -> None:
    monkeypatch.setenv("CERTD_TEST_SMTP_PASSWORD", SMTP_PASSWORD)
    box, port = mailbox
    config = EmailConfig(
        name="mail",
        host="127.0.0.1",
        port=port,
        username="certd",
        password=Secret("env:CERTD_TEST_SMTP_PASSWORD"),
        sender="certd@example.com",
        to=("noc@example.com",),
        routing=Routing(retries=3, timeout=FAST.timeout),
    )  # no trust_anchor: the lab CA is not a system root
    router, registry = router_for(config)
    with capture_logs() as logs:
        await publish(router, failed(unique_target()))
    errors = [e["error"] for e in logs if e["event"] == "notice delivery failed"]
    assert len(errors) == 1  # not retried: trying again cannot help
    assert "set trust_anchor" in errors[0]
    assert box.messages == []
    assert sent(registry, config, "failed") == 1


async def test_webex_wrong_token_is_not_retried(
    http_stub: HTTPStub, monkeypatch: pytest.MonkeyPatch, router_for: Any
) -> None:
    monkeypatch.setenv("CERTD_TEST_WEBEX_TOKEN", "expired-token-123")
    config = WebexReceiver(http_stub).config("webex", Routing(retries=3, timeout=FAST.timeout))
    router, registry = router_for(config)
    with capture_logs() as logs:
        await publish(router, failed(unique_target()))
    errors = [e["error"] for e in logs if e["event"] == "notice delivery failed"]
    assert errors == [
        f"webex: http://127.0.0.1:{http_stub.port} answered HTTP 401: "
        '{"message": "The request requires a valid access token"}'
    ]
    assert "expired-token-123" not in repr(logs)
    assert sent(registry, config, "failed") == 1


async def test_config_file_to_deliveries_through_the_bus(
    tmp_path: Path,
    alertmanager: str,
    http_stub: HTTPStub,
    mailbox: tuple[Mailbox, int],
    smtp_tls: tuple[Path, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the daemon does: load [[notifier]] tables, build the router, subscribe it."""
    monkeypatch.setenv("CERTD_TEST_HOOK_SECRET", HOOK_SECRET)
    monkeypatch.setenv("CERTD_TEST_HOOK_AUTH", HOOK_AUTH)
    monkeypatch.setenv("CERTD_TEST_SMTP_PASSWORD", SMTP_PASSWORD)
    box, smtp_port = mailbox
    (tmp_path / "webex.token").write_text(WEBEX_TOKEN + "\n")
    (tmp_path / "webex.token").chmod(0o600)
    config = tmp_path / "certd.toml"
    config.write_text(
        f"""
[[expressway]]
name = "expc1"
address = "expc1.example.com"

[[notifier]]
name = "am"
kind = "alertmanager"
url = "{alertmanager}"

[[notifier]]
name = "room"
kind = "webex"
token = "file:webex.token"
room_id = "room-1"
api_url = "http://127.0.0.1:{http_stub.port}/v1/messages"

[[notifier]]
name = "itsm"
kind = "webhook"
url = "http://127.0.0.1:{http_stub.port}/hooks/T0KENINPATH"
secret = "env:CERTD_TEST_HOOK_SECRET"
headers = {{ "Authorization" = "env:CERTD_TEST_HOOK_AUTH", "X-Team" = "uc" }}

[[notifier]]
name = "mail"
kind = "email"
host = "127.0.0.1"
port = {smtp_port}
username = "certd"
password = "env:CERTD_TEST_SMTP_PASSWORD"
trust_anchor = "{smtp_tls[0]}"
from = "certd@example.com"
to = ["noc@example.com"]
"""
    )
    cfg = load_config(config)
    registry = CollectorRegistry()
    router = build_router(cfg.notifiers, registry=registry)
    bus = EventBus()
    bus.subscribe(router.publish)
    target = unique_target()
    try:
        await bus.publish(failed(target))
        await router.join()
    finally:
        await router.aclose()
    for n in cfg.notifiers:
        labels = {"notifier": n.name, "kind": n.kind, "result": "sent"}
        assert registry.get_sample_value("expressway_notifications_total", labels) == 1, n.name
    assert len(await active_alerts(alertmanager, target)) == 1
    assert len(await WebexReceiver(http_stub).deliveries(target)) == 1
    assert len(await WebhookReceiver(http_stub).deliveries(target)) == 1
    assert len(await EmailReceiver(box, smtp_port, smtp_tls[0]).deliveries(target)) == 1
    assert http_stub.rejected == []
