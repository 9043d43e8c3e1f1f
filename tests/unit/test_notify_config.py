"""`[[notifier]]` parsing: defaults per kind, and errors naming file, key path and fix."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from expressway_certd.config import load_config
from expressway_certd.monitor.config import Secret
from expressway_certd.monitor.config_notify import (
    DEFAULT_EVENTS,
    AlertmanagerConfig,
    EmailConfig,
    WebexConfig,
    WebhookConfig,
)
from expressway_certd.monitor.errors import ConfigError

BASE = '[[expressway]]\nname = "e1"\naddress = "e1.example.com"\n'


def load(tmp_path: Path, text: str):
    path = tmp_path / "certd.toml"
    path.write_text(BASE + text)
    return load_config(path)


def test_every_kind_with_defaults(tmp_path):
    cfg = load(
        tmp_path,
        """
[[notifier]]
name = "am"
kind = "alertmanager"
url = "http://127.0.0.1:9093/api/v2/alerts"

[[notifier]]
name = "webex"
kind = "webex"
token = "env:WEBEX_TOKEN"
room_id = "Y2lzY29zcGFyazovL3VzL1JPT00v"

[[notifier]]
name = "hook"
kind = "webhook"
url = "https://hooks.example.com/certd"
secret = "file:hook.key"
headers = { "X-Team" = "uc", "Authorization" = "env:HOOK_AUTH" }

[[notifier]]
name = "mail"
kind = "email"
host = "smtp.example.com"
username = "certd"
password = "env:SMTP_PASSWORD"
from = "certd@example.com"
to = ["uc-team@example.com", "noc@example.com"]
""",
    )
    am, webex, hook, mail = cfg.notifiers
    assert isinstance(am, AlertmanagerConfig)
    assert am.url == "http://127.0.0.1:9093"  # the API path is added by the notifier
    assert am.resolve_timeout == timedelta(hours=24)
    assert am.routing.events == DEFAULT_EVENTS
    assert "StageFailed" in DEFAULT_EVENTS and "CertChanged" not in DEFAULT_EVENTS
    assert am.routing.throttle == timedelta(hours=1) and am.routing.retries == 3
    assert isinstance(webex, WebexConfig)
    assert webex.api_url == "https://webexapis.com/v1/messages"
    assert isinstance(hook, WebhookConfig)
    assert hook.headers[0] == ("X-Team", "uc")
    assert isinstance(hook.headers[1][1], Secret)
    assert isinstance(mail, EmailConfig)
    assert (mail.port, mail.starttls, mail.sender) == (587, True, "certd@example.com")
    assert mail.to == ("uc-team@example.com", "noc@example.com")
    refs = {s.ref for s in cfg.secrets()}
    assert {"env:WEBEX_TOKEN", "file:hook.key", "env:HOOK_AUTH", "env:SMTP_PASSWORD"} <= refs
    assert "env:WEBEX_TOKEN" in repr(webex) and "Secret(" in repr(webex)


def test_routing_keys(tmp_path):
    cfg = load(
        tmp_path,
        """
[[notifier]]
name = "all"
kind = "webhook"
url = "http://127.0.0.1:8080/x"
events = "*"
min_severity = "warning"
throttle = "30m"
timeout = "5s"
retries = 0

[[notifier]]
name = "some"
kind = "webhook"
url = "http://127.0.0.1:8080/y"
events = ["StageFailed", "RenewalCompleted"]
""",
    )
    every, some = cfg.notifiers
    assert every.routing.events is None
    assert every.routing.selects("StageFailed", "critical")
    assert not every.routing.selects("CertChanged", "info")
    assert (every.routing.throttle, every.routing.timeout, every.routing.retries) == (
        timedelta(minutes=30),
        timedelta(seconds=5),
        0,
    )
    assert some.routing.events == {"StageFailed", "RenewalCompleted"}
    assert not some.routing.selects("ProbeFailed", "warning")


def test_no_notifiers_is_fine(tmp_path):
    assert load(tmp_path, "").notifiers == ()


WEBHOOK = 'name = "n1"\nkind = "webhook"\nurl = "https://h.example.com/x"\n'
EMAIL = 'name = "m"\nkind = "email"\nhost = "smtp.example.com"\nfrom = "a@example.com"\nto = ["b@example.com"]\n'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            'name = "n1"\nkind = "pager"\n',
            "notifier[0] (n1).kind: must be one of alertmanager, webex, webhook, email",
        ),
        ('kind = "webhook"\n', "notifier[0].name: is required"),
        (
            WEBHOOK + 'event = ["StageFailed"]\n',
            "notifier[0] (n1).event: unknown key; did you mean 'events'?",
        ),
        (
            WEBHOOK + 'events = ["StageFail"]\n',
            "unknown event type 'StageFail'; did you mean 'StageFailed'?",
        ),
        (WEBHOOK + 'events = "all"\n', 'notifier[0] (n1).events: must be "*" or a list'),
        (
            WEBHOOK + 'min_severity = "page"\n',
            "min_severity: must be one of info, warning, critical",
        ),
        (WEBHOOK + 'throttle = "soon"\n', "notifier[0] (n1).throttle: expected a duration"),
        (WEBHOOK + "retries = 99\n", "retries: must be between 0 and 10"),
        (WEBHOOK + 'secret = "hunter2"\n', "secret: must be a secret reference"),
        (
            WEBHOOK + 'headers = { "Content-Type" = "text/plain" }\n',
            "Content-Type is set by expressway-certd",
        ),
        (WEBHOOK + 'headers = { "Bad Header" = "x" }\n', "is not a valid HTTP header name"),
        (
            'name = "n1"\nkind = "webhook"\nurl = "ftp://h.example.com/x"\n',
            "url: must be an http:// or https:// URL",
        ),
        ('name = "n1"\nkind = "webhook"\n', "notifier[0] (n1).url: is required"),
        ('name = "w"\nkind = "webex"\nroom_id = "r"\n', "notifier[0] (w).token: is required"),
        ('name = "w"\nkind = "webex"\ntoken = "env:T"\n', "notifier[0] (w).room_id: is required"),
        (
            'name = "a"\nkind = "alertmanager"\nurl = "http://am:9093"\ntrust_anchor = "nope.pem"\n',
            "trust_anchor: file",
        ),
        (EMAIL.replace('to = ["b@example.com"]\n', ""), "notifier[0] (m).to: is required"),
        (EMAIL.replace('from = "a@example.com"\n', ""), "notifier[0] (m).from: is required"),
        (EMAIL + 'username = "u"\n', "notifier[0] (m).password: set both or neither"),
        (
            EMAIL + 'username = "u"\npassword = "env:P"\nstarttls = false\n',
            "login would cross in clear",
        ),
        (EMAIL.replace('["b@example.com"]', '["not an address"]'), "to: must be an e-mail address"),
    ],
    ids=lambda v: v if len(v) < 40 else None,
)
def test_errors(tmp_path, body, expected):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, "[[notifier]]\n" + body)
    assert str(err.value).startswith(str(tmp_path / "certd.toml") + ": ")
    assert expected in str(err.value)


def test_duplicate_names_and_wrong_shape(tmp_path):
    with pytest.raises(ConfigError, match="name 'n1' is used twice"):
        load(tmp_path, "[[notifier]]\n" + WEBHOOK + "[[notifier]]\n" + WEBHOOK)
    with pytest.raises(
        ConfigError, match=r"notifier: must be an array of tables: write \[\[notifier\]\]"
    ):
        load(tmp_path, "[notifier]\nname = 'x'\n")


def test_secret_values_are_never_echoed(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(
            tmp_path,
            '[[notifier]]\nname = "w"\nkind = "webex"\nroom_id = "r"\ntoken = "NjQ1ZDE4Y2Et"\n',
        )
    assert "NjQ1ZDE4Y2Et" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        load(tmp_path, '[[notifier]]\nname = "n"\nkind = "webhook"\nurl = "hxxps://h/T0KEN123"\n')
    assert "T0KEN123" not in str(err.value)


def test_documented_example_loads(tmp_path):
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    section = doc[doc.index("## Notifiers (`[[notifier]]`)") :]
    example = section[section.index("```toml\n") + 8 :]
    example = example[: example.index("```")]
    cfg = load(tmp_path, example)
    assert [(n.name, n.kind) for n in cfg.notifiers] == [
        ("alertmanager", "alertmanager"),
        ("uc-room", "webex"),
        ("itsm", "webhook"),
        ("pki-team", "email"),
    ]
