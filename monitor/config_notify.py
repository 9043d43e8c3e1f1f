"""Parsing of the `[[notifier]]` array of tables into one frozen config per notifier.

The notifiers in alerts/notifiers/ take these dataclasses; this module only validates the file.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from expressway_certd.monitor.config_base import Secret, Section, key, required_key, toml_keys
from expressway_certd.monitor.errors import ConfigError
from expressway_certd.monitor.events import EVENT_TYPES

NOTIFIER_KINDS = ("alertmanager", "webex", "webhook", "email")
SEVERITIES = ("info", "warning", "critical")
DEFAULT_EVENTS = frozenset(t for t, cls in EVENT_TYPES.items() if cls.severity != "info")
WEBEX_MESSAGES_URL = "https://webexapis.com/v1/messages"
SIGNATURE_HEADER = "X-Certd-Signature"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # RFC 9110 token
_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


@dataclass(frozen=True)
class NotifierIdentity:
    """The two keys every `[[notifier]]` starts with (declared here for key sets and docs)."""

    name: str = required_key(
        "unique name; appears in logs and in `expressway_notifications_total{notifier}`"
    )
    kind: str = required_key(f"`{'`, `'.join(NOTIFIER_KINDS[:-1])}` or `{NOTIFIER_KINDS[-1]}`")


@dataclass(frozen=True)
class Routing:
    """Which events a notifier gets, how often, and how hard each delivery is tried."""

    events: frozenset[str] | None = key(  # None: every event type ("*")
        DEFAULT_EVENTS,
        "list of event type names (`StageFailed`, `ProbeFailed`, `ApprovalRequired`, ...; see "
        'notifications.md), or `"*"` for all. Recoveries of problems the notifier reported are '
        "sent anyway, as resolved notices",
        shown="every warning and critical event type",
    )
    min_severity: str = key("info", "`info`, `warning` or `critical`: events below it are not sent")
    throttle: timedelta = key(
        timedelta(hours=1),
        "the same event type for the same target and endpoint/stage is not sent again within "
        "this; a recovery re-arms it",
    )
    timeout: timedelta = key(timedelta(seconds=10), "deadline of one delivery attempt")
    retries: int = key(3, "further attempts after a failure that may be temporary (0 to 10)")

    def selects(self, event_type: str, severity: str) -> bool:
        if self.events is not None and event_type not in self.events:
            return False
        return SEVERITIES.index(severity) >= SEVERITIES.index(self.min_severity)


@dataclass(frozen=True)
class AlertmanagerConfig:
    name: str
    url: str = required_key(
        "base URL of Alertmanager, e.g. `http://alertmanager:9093` (`/api/v2/alerts` is added)"
    )
    trust_anchor: Path | None = key(
        None, "PEM bundle verifying an `https://` Alertmanager", shown="system roots"
    )
    resolve_timeout: timedelta = key(
        timedelta(hours=24),
        "`endsAt` of an alert whose recovery is never seen; a repeat after `throttle` extends it",
    )
    routing: Routing = field(default_factory=Routing)
    kind: str = "alertmanager"

    def secrets(self) -> list[Secret]:
        return []


@dataclass(frozen=True)
class WebexConfig:
    name: str
    token: Secret = required_key("secret reference: the bot's access token")
    room_id: str = required_key("the room the bot posts to (the bot must be a member)")
    api_url: str = key(
        WEBEX_MESSAGES_URL,
        "messages API endpoint (change only for a proxy or a test server)",
    )
    trust_anchor: Path | None = key(None, "PEM bundle verifying `api_url`", shown="system roots")
    routing: Routing = field(default_factory=Routing)
    kind: str = "webex"

    def secrets(self) -> list[Secret]:
        return [self.token]


@dataclass(frozen=True)
class WebhookConfig:
    name: str
    url: str = required_key(
        "`http://` or `https://` URL the JSON document is POSTed to; it may hold a token, so "
        "only its scheme, host and port are ever logged"
    )
    secret: Secret | None = key(
        None,
        "secret reference; the key of the `X-Certd-Signature: sha256=<hex HMAC-SHA256 of the "
        "body>` header",
    )
    headers: tuple[tuple[str, str | Secret], ...] = key(
        (),
        'table of extra headers, e.g. `{ "Authorization" = "env:HOOK_AUTH", "X-Team" = "uc" }`; '
        "a value `env:`/`file:` is read as a secret. `Content-Type` and `X-Certd-Signature` are "
        "set by expressway-certd",
        shown="none",
    )
    trust_anchor: Path | None = key(
        None, "PEM bundle verifying an `https://` receiver", shown="system roots"
    )
    routing: Routing = field(default_factory=Routing)
    kind: str = "webhook"

    def secrets(self) -> list[Secret]:
        out = [v for _, v in self.headers if isinstance(v, Secret)]
        return [self.secret, *out] if self.secret else out


@dataclass(frozen=True)
class EmailConfig:
    name: str
    host: str = required_key("SMTP server")
    sender: str = required_key("sender address", name="from")
    to: tuple[str, ...] = required_key("list of recipient addresses")
    port: int = key(587, "SMTP port", shown="`587` (`25` with `starttls = false`)")
    starttls: bool = key(
        True,
        "upgrade the connection with STARTTLS and verify the server's certificate and name; "
        "must be true when logging in",
    )
    username: str | None = key(None, "SMTP login (set both `username` and `password` or neither)")
    password: Secret | None = key(None, "secret reference: the SMTP password")
    trust_anchor: Path | None = key(
        None, "PEM bundle verifying the SMTP server's certificate", shown="system roots"
    )
    routing: Routing = field(default_factory=Routing)
    kind: str = "email"

    def secrets(self) -> list[Secret]:
        return [self.password] if self.password else []


NotifierConfig = AlertmanagerConfig | WebexConfig | WebhookConfig | EmailConfig

NOTIFIER_CLASSES: dict[str, type[NotifierConfig]] = {
    "alertmanager": AlertmanagerConfig,
    "webex": WebexConfig,
    "webhook": WebhookConfig,
    "email": EmailConfig,
}
_COMMON = toml_keys(NotifierIdentity) | toml_keys(Routing)
_KEYS = {kind: _COMMON | toml_keys(cls) for kind, cls in NOTIFIER_CLASSES.items()}


def _events(s: Section) -> frozenset[str] | None:
    value = s.table.get("events")
    if value is None:
        return DEFAULT_EVENTS
    if value in ("*", ["*"]):
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise s.error("events", f'must be "*" or a list of event type names, got {value!r}')
    for name in value:
        if name not in EVENT_TYPES:
            hint = difflib.get_close_matches(name, sorted(EVENT_TYPES), n=1)
            fix = f"did you mean {hint[0]!r}?" if hint else f"known: {', '.join(EVENT_TYPES)}"
            raise s.error("events", f"unknown event type {name!r}; {fix}")
    return frozenset(value)


def _routing(s: Section) -> Routing:
    severity = (s.get_str("min_severity") or Routing.min_severity).lower()
    if severity not in SEVERITIES:
        raise s.error("min_severity", f"must be one of {', '.join(SEVERITIES)}; got {severity!r}")
    return Routing(
        events=_events(s),
        min_severity=severity,
        throttle=s.get_duration("throttle", Routing.throttle),
        timeout=s.get_duration("timeout", Routing.timeout),
        retries=s.get_int("retries", Routing.retries, minimum=0, maximum=10),
    )


def _http_url(s: Section, key: str, example: str, default: str | None = None) -> str:
    url = s.get_str(key, default, required=default is None) or ""
    parts = s.url_parts(key, url, example)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The URL may carry a token (chat webhooks often do): name the key, not the value.
        raise s.error(key, f"must be an http:// or https:// URL like {example!r}")
    return url


def _alertmanager(file: Path, name: str, s: Section, routing: Routing) -> AlertmanagerConfig:
    url = _http_url(s, "url", "http://alertmanager.example.com:9093").rstrip("/")
    for suffix in ("/api/v2/alerts", "/api/v2"):
        url = url.removesuffix(suffix)
    return AlertmanagerConfig(
        name=name,
        url=url,
        trust_anchor=s.get_file("trust_anchor", file.parent),
        resolve_timeout=s.get_duration("resolve_timeout", AlertmanagerConfig.resolve_timeout),
        routing=routing,
    )


def _webex(file: Path, name: str, s: Section, routing: Routing) -> WebexConfig:
    token = s.get_secret("token", file.parent)
    if token is None:
        raise s.error("token", "is required: the bot's access token as 'env:NAME' or 'file:PATH'")
    return WebexConfig(
        name=name,
        token=token,
        room_id=s.get_str("room_id", required=True) or "",
        api_url=_http_url(s, "api_url", WEBEX_MESSAGES_URL, WEBEX_MESSAGES_URL),
        trust_anchor=s.get_file("trust_anchor", file.parent),
        routing=routing,
    )


def _headers(file: Path, s: Section) -> tuple[tuple[str, str | Secret], ...]:
    table = s.table.get("headers", {})
    if not isinstance(table, dict):
        raise s.error("headers", 'must be a table like { "X-Team" = "uc" }')
    out: list[tuple[str, str | Secret]] = []
    for header, value in table.items():
        if not _HEADER.match(header):
            raise s.error("headers", f"{header!r} is not a valid HTTP header name")
        if header.lower() in ("content-type", "content-length", SIGNATURE_HEADER.lower()):
            raise s.error("headers", f"{header} is set by expressway-certd; remove it")
        if not isinstance(value, str) or not value or "\n" in value or "\r" in value:
            raise s.error("headers", f"{header}: must be a one-line string")
        if value.startswith(("env:", "file:")):
            out.append((header, Secret(value, s.key(f"headers.{header}"), file.parent)))
        else:
            out.append((header, value))
    return tuple(out)


def _webhook(file: Path, name: str, s: Section, routing: Routing) -> WebhookConfig:
    return WebhookConfig(
        name=name,
        url=_http_url(s, "url", "https://hooks.example.com/certd"),
        secret=s.get_secret("secret", file.parent),
        headers=_headers(file, s),
        trust_anchor=s.get_file("trust_anchor", file.parent),
        routing=routing,
    )


def _address(s: Section, key: str, value: Any) -> str:
    if not isinstance(value, str) or not _ADDRESS.match(value.strip()):
        raise s.error(key, f"must be an e-mail address like 'pki-team@example.com', got {value!r}")
    return value.strip()


def _email(file: Path, name: str, s: Section, routing: Routing) -> EmailConfig:
    starttls = s.get_bool("starttls", True)
    username = s.get_str("username")
    password = s.get_secret("password", file.parent)
    if (username is None) != (password is None):
        raise s.error("password" if password is None else "username", "set both or neither")
    if username is not None and not starttls:
        raise s.error(
            "starttls", "must be true with username/password: the login would cross in clear"
        )
    if "from" not in s.table:
        raise s.error("from", "is required: the sender address, e.g. 'certd@example.com'")
    raw_to = s.table.get("to")
    if isinstance(raw_to, str):
        raw_to = [raw_to]
    if not isinstance(raw_to, list) or not raw_to:
        raise s.error("to", "is required: a list of recipient addresses")
    return EmailConfig(
        name=name,
        host=s.get_str("host", required=True) or "",
        port=s.get_int("port", EmailConfig.port if starttls else 25, maximum=65535),
        starttls=starttls,
        username=username,
        password=password,
        sender=_address(s, "from", s.table["from"]),
        to=tuple(_address(s, "to", v) for v in raw_to),
        trust_anchor=s.get_file("trust_anchor", file.parent),
        routing=routing,
    )


_PARSERS: dict[str, Callable[[Path, str, Section, Routing], NotifierConfig]] = {
    "alertmanager": _alertmanager,
    "webex": _webex,
    "webhook": _webhook,
    "email": _email,
}


def parse_notifier(
    file: Path, index: int, table: Any, *, check_files: bool = True
) -> NotifierConfig:
    path = f"notifier[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: {path}: must be a table ([[notifier]])")
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"{file}: {path}.name: is required: letters, digits, '-', '_' and '.', got {name!r}"
        )
    path = f"notifier[{index}] ({name})"
    kind = table.get("kind")
    if kind not in NOTIFIER_KINDS:
        raise ConfigError(
            f"{file}: {path}.kind: must be one of {', '.join(NOTIFIER_KINDS)}; got {kind!r}"
        )
    s = Section(file, path, table, _KEYS[kind], check_files=check_files)
    return _PARSERS[kind](file, name, s, _routing(s))


def parse_notifiers(
    file: Path, raw: Any, *, check_files: bool = True
) -> tuple[NotifierConfig, ...]:
    """Validate the `[[notifier]]` array; names must be unique."""
    if not isinstance(raw, list):
        raise ConfigError(f"{file}: notifier: must be an array of tables: write [[notifier]]")
    out = tuple(parse_notifier(file, i, t, check_files=check_files) for i, t in enumerate(raw))
    names = [n.name for n in out]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(
                f"{file}: notifier: name {name!r} is used twice; names must be unique"
            )
    return out
