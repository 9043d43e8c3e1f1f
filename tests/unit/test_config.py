from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from expressway_certd.cli import main
from expressway_certd.config import load_config
from expressway_certd.monitor.config import Secret
from expressway_certd.monitor.durations import (
    Fraction,
    format_duration,
    parse_duration,
    parse_duration_or_fraction,
)
from expressway_certd.monitor.errors import ConfigError

EXAMPLES = sorted((Path(__file__).parents[2] / "deploy" / "examples").glob("*.toml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "certd.toml"
    path.write_text(text)
    return path


def test_defaults(tmp_path):
    cfg = load_config(write(tmp_path, '[[expressway]]\nname = "e1"\naddress = "e1.example.com"\n'))
    d = cfg.daemon
    assert (d.listen_host, d.listen_port) == ("127.0.0.1", 9464)
    assert d.state.startswith("sqlite+aiosqlite:///") and d.state.endswith("state.db")
    assert d.poll_interval == timedelta(minutes=5)
    assert d.expiry_windows == (30, 14, 7, 1)
    # role unknown: only the ports both roles serve
    assert [(e.port, e.service) for e in cfg.expressways[0].endpoints] == [
        (443, "https"),
        (5061, "sip-tls"),
    ]


def test_role_defaults(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            '[[expressway]]\nname = "c"\nrole = "c"\naddress = "c.example.com"\n'
            '[[expressway]]\nname = "e"\nrole = "E"\naddress = "e.example.com"\n',
        )
    )
    c, e = cfg.expressways
    assert [ep.port for ep in c.endpoints] == [443, 5061]
    assert [(ep.port, ep.starttls) for ep in e.endpoints] == [
        (443, None),
        (5061, None),
        (7001, None),
        (8443, None),
        (5222, "xmpp"),
    ]
    assert e.role == "e"


def test_endpoint_forms(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            """
[[expressway]]
name = "e1"
address = "e1.example.com"
endpoints = ["e1.example.com:8443", "[2001:db8::1]:5061", "7001",
             { host = "x.example.com", port = 5222 },
             { port = 9443, service = "web", sni = "collab.example.com" }]
""",
        )
    )
    eps = cfg.expressways[0].endpoints
    assert [(e.host, e.port, e.service, e.starttls) for e in eps] == [
        ("e1.example.com", 8443, "mra", None),
        ("2001:db8::1", 5061, "sip-tls", None),
        ("e1.example.com", 7001, "traversal", None),
        ("x.example.com", 5222, "xmpp", "xmpp"),
        ("e1.example.com", 9443, "web", None),
    ]
    assert eps[1].address == "[2001:db8::1]:5061"
    assert eps[4].sni == "collab.example.com"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[daemon]\nlisen = '1:2'\n", r"daemon\.lisen: unknown key; did you mean 'listen'\?"),
        ("[daemon]\nlisten = 'nowhere'\n", r"daemon\.listen: must be 'HOST:PORT'"),
        ("[daemon]\npoll_interval = '5 minutes'\n", r"daemon\.poll_interval: expected a duration"),
        ("[daemon]\npoll_interval = '10s'\nprobe_timeout = '20s'\n", "shorter than poll_interval"),
        ("[daemon]\nconcurrency = 0\n", r"daemon\.concurrency: must be between 1"),
        ("[daemon]\nexpiry_windows = [30, -1]\n", "positive day counts"),
        ("[daemon]\ntrust_bundle = 'missing.pem'\n", r"missing\.pem does not exist"),
        ("[[expressway]]\naddress = 'a'\n", r"expressway\[0\]\.name: is required"),
        ("[[expressway]]\nname = 'x'\n", r"expressway\[0\] \(x\)\.address: is required"),
        ("[[expressway]]\nname='x'\naddress='a'\nrole='b'\n", "must be 'c' .* or 'e'"),
        ("[[expressway]]\nname='x'\naddress='a'\nendpoints=['a:99999']\n", "port must be 1-65535"),
        ("[[expressway]]\nname='x'\naddress='a'\nendpoints=['a:1', 'a:1']\n", "listed twice"),
        (
            "[[expressway]]\nname='x'\naddress='a'\nendpoints=[{port=5222, starttls='smtp'}]\n",
            "supported: xmpp",
        ),
        ("[[expressway]]\nname='x'\naddress='a'\n[[expressway]]\nname='x'\naddress='b'\n", "twice"),
        ("expressway = 3\n", "write \\[\\[expressway\\]\\]"),
        ("[daemon\n", "TOML syntax error"),
        ("[bogus]\n", "bogus: unknown key"),
    ],
)
def test_errors_name_file_key_and_fix(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(info.value).startswith(str(path))


def test_inline_password_is_refused_and_never_echoed(tmp_path):
    path = write(
        tmp_path,
        "[[expressway]]\nname='x'\naddress='a'\nusername='admin'\npassword='Sup3rS3cret!'\n",
    )
    with pytest.raises(ConfigError, match="secret reference") as info:
        load_config(path)
    assert "Sup3rS3cret" not in str(info.value)


def test_secrets_from_env_and_file(tmp_path, monkeypatch):
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-file\n")
    secret_file.chmod(0o600)
    path = write(
        tmp_path,
        "[[expressway]]\nname='a'\naddress='a'\nusername='admin'\npassword='env:CERTD_TEST_PW'\n"
        "[[expressway]]\nname='b'\naddress='b'\nusername='admin'\npassword='file:pw'\n",
    )
    monkeypatch.setenv("CERTD_TEST_PW", "from-env")
    cfg = load_config(path)
    a, b = (e.password for e in cfg.expressways)
    assert isinstance(a, Secret) and isinstance(b, Secret)
    assert a.reveal() == "from-env" and b.reveal() == "from-file"
    assert "from-env" not in repr(cfg) and "from-file" not in repr(cfg)
    monkeypatch.delenv("CERTD_TEST_PW")
    with pytest.raises(ConfigError, match="CERTD_TEST_PW is not set"):
        a.reveal()
    secret_file.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        b.reveal()


def test_username_without_password(tmp_path):
    path = write(tmp_path, "[[expressway]]\nname='a'\naddress='a'\nusername='admin'\n")
    with pytest.raises(ConfigError, match=r"password: set both or neither"):
        load_config(path)


def test_state_url_forms(tmp_path):
    def state(value: str) -> str:
        return load_config(write(tmp_path, f"[daemon]\nstate = '{value}'\n")).daemon.state

    assert state("certd.db") == f"sqlite+aiosqlite:///{tmp_path / 'certd.db'}"
    assert state("sqlite:////var/x.db") == "sqlite+aiosqlite:////var/x.db"
    assert state("postgresql://u@db/certd") == "postgresql+asyncpg://u@db/certd"


def test_state_defaults_to_systemd_state_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/expressway-certd")
    cfg = load_config(write(tmp_path, ""))
    assert cfg.daemon.state == "sqlite+aiosqlite:////var/lib/expressway-certd/state.db"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_load(example):
    cfg = load_config(example, check_files=False)
    assert cfg.expressways, "an example should configure at least one Expressway"


def test_examples_exist():
    assert {p.name for p in EXAMPLES} >= {"minimal.toml", "full.toml"}


def test_check_config_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CERTD_TEST_PW", "hunter2-secret")
    path = write(
        tmp_path,
        "[[expressway]]\nname='e1'\nrole='e'\naddress='e1.example.com'\n"
        "username='admin'\npassword='env:CERTD_TEST_PW'\n",
    )
    assert main(["check-config", str(path), "--secrets"]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "e1.example.com:5222 starttls" in out
    assert "hunter2" not in out
    monkeypatch.delenv("CERTD_TEST_PW")
    assert main(["check-config", str(path), "--secrets"]) == 2
    assert "CERTD_TEST_PW is not set" in capsys.readouterr().err
    bad = write(tmp_path, "[daemon]\nlisten = 3\n")
    assert main(["check-config", str(bad)]) == 2
    assert "daemon.listen" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("12h", timedelta(hours=12)),
        ("30d", timedelta(days=30)),
        ("2w", timedelta(weeks=2)),
        ("1.5h", timedelta(minutes=90)),
        (60, timedelta(minutes=1)),
    ],
)
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "-1d", "0s", "1y", True])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_fraction_of_lifetime():
    assert parse_duration_or_fraction("1/3") == Fraction(1, 3)
    assert parse_duration_or_fraction("30d") == timedelta(days=30)
    with pytest.raises(ValueError, match="between 0 and 1"):
        parse_duration_or_fraction("3/2")
    assert format_duration(timedelta(days=29, hours=4)) == "29d 4h"
    assert format_duration(timedelta(seconds=-45)) == "-45s"


def test_secret_file_relative_to_config(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "pw").write_text("x")
    os.chmod(tmp_path / "sub" / "pw", 0o600)
    path = write(
        tmp_path, "[[expressway]]\nname='a'\naddress='a'\nusername='u'\npassword='file:sub/pw'\n"
    )
    assert load_config(path).expressways[0].password.reveal() == "x"  # type: ignore[union-attr]
