"""Inputs that used to crash the loader or slip through it (issue 13, finding 5).

Each case is checked through `load_config`, and the ones an operator meets first through the
`check-config` and `run` processes: exit code 2, the message, never a traceback.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from expressway_certd.config import load_config
from expressway_certd.monitor.config import check_runtime
from expressway_certd.monitor.errors import ConfigError

BOX = "[[expressway]]\nname = 'e1'\naddress = 'e1.example.com'\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "certd.toml"
    path.write_text(text)
    return path


def renewal(extra: str) -> str:
    return (
        "[[expressway]]\nname = 'c1'\nrole = 'c'\naddress = 'c1.example.com'\n"
        f"renewal = {{ ca = 'hand', {extra} }}\n"
        "[ca.hand]\nkind = 'manual'\n"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[daemon]\naudit_retention = '99999999999999999999999d'\n",
            r"daemon\.audit_retention: duration must be at most 36500d",
        ),
        ("[daemon]\npoll_interval = inf\n", r"daemon\.poll_interval: duration must be at most"),
        ("[daemon]\npoll_interval = nan\n", r"daemon\.poll_interval: duration must be positive"),
        ("[daemon]\nhistory = 5\nrenewal_check = 0.000001\n", r"renewal_check: must be at least"),
        ("[daemon]\nrenewal_check = '0.000001s'\n", r"renewal_check: must be at least 0\.1s"),
        ("[daemon]\nclient_cert_check = '30s'\n", r"client_cert_check: must be at least 60s"),
        ("[daemon]\npoll_interval = '\u0661\u0662s'\n", r"poll_interval: expected a duration"),
        ("[daemon]\nlisten = '127.0.0.1:²'\n", r"daemon\.listen: must be 'HOST:PORT'"),
        ("[daemon]\nlisten = 'a b:9464'\n", r"daemon\.listen: 'a b' is not a host name"),
        ("[daemon]\nstate = 'mysql://u@db/certd'\n", r"daemon\.state: must be a file path"),
        (
            '[[expressway]]\nname = "e\\u0000x"\naddress = "e1.example.com"\n',
            r"expressway\[0\]\.name: contains the control character U\+0000",
        ),
        (
            "[[expressway]]\nname = 'e1'\naddress = 'e1.example.com'\ncluster = \"\\u001b[31m\"\n",
            r"cluster: contains the control character U\+001B",
        ),
        (
            BOX + "endpoints = ['a b:443']\n",
            r"expressway\[0\] \(e1\)\.endpoints\[0\]: 'a b' is not a host name",
        ),
        (
            BOX + "endpoints = ['[zzzz::1]:443']\n",
            r"endpoints\[0\]: 'zzzz::1' is not a valid IPv6 address",
        ),
        (BOX + "endpoints = ['[::1]443']\n", r"endpoints\[0\]: must be '\[IPv6\]:port'"),
        (BOX + "endpoints = [{ host = 'x y', port = 443 }]\n", r"endpoints\[0\]\.host: 'x y'"),
        (
            BOX + "endpoints = [{ port = 443, sni = '10.0.0.1' }]\n",
            r"sni: '10\.0\.0\.1' is an IP address",
        ),
        ("[[expressway]]\nname = 'e1'\naddress = 'e1 .example.com'\n", r"\.address: 'e1 \."),
        (renewal("subject = { Country = 'CHE' }"), r"renewal\.subject\.Country: must be a two"),
        (renewal(f"subject = {{ Organization = '{'x' * 65}' }}"), r"Organization: must be 1 to 64"),
        (renewal("extra_sans = ['bad name.example.com']"), r"renewal\.extra_sans: 'bad name"),
        (
            renewal("maintenance_window = { cron = '0 2 30 2 *' }"),
            r"maintenance_window\.cron: '0 2 30 2 \*' never fires",
        ),
        (
            renewal("maintenance_window = { cron = '0 2 * * 6', timezone = 'Europe/' }"),
            r"maintenance_window\.timezone: unknown time zone",
        ),
        ("[daemon]\ndata_dir = '~certd-no-such-user/x'\n", r"daemon\.data_dir: cannot expand"),
        ("[daemon]\nstate = '~certd-no-such-user/s.db'\n", r"daemon\.state: cannot expand"),
        (
            "[ca.x]\nkind = 'acme'\ndirectory = 'https://a.example/dir'\nchallenge = 'hook'\n"
            'hook = "run \'unclosed"\n',
            r"ca\.x\.hook: cannot split the command into words: No closing quotation",
        ),
        (
            "[ca.x]\nkind = 'est'\nurl = 'https://[::1/.well-known/est'\nusername = 'u'\n"
            "password = 'env:P'\n",
            r"ca\.x\.url: is not a valid URL \(Invalid IPv6 URL\)",
        ),
        (
            "[[notifier]]\nname = 'n'\nkind = 'webhook'\nurl = 'https://h.example:99999/t0ken'\n",
            r"notifier\[0\] \(n\)\.url: is not a valid URL \(Port out of range",
        ),
        (
            "[[unified_cm]]\nname = 'u'\nnodes = ['pub example']\nusername = 'a'\n"
            "password = 'env:X'\n",
            r"unified_cm\[0\] \(u\)\.nodes: 'pub example' is not a host name",
        ),
    ],
)
def test_crashing_or_slipping_input_is_a_config_error(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(info.value).startswith(str(path))


def test_deeply_nested_toml_is_a_config_error(tmp_path):
    path = write(tmp_path, "x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path)
    # Nesting that TOML can read but no key of this file uses.
    path = write(tmp_path, "[daemon]\nlisten = " + "[" * 40 + "]" * 40 + "\n")
    with pytest.raises(ConfigError, match=r"daemon\.listen(\[0\])+: nested more than 16"):
        load_config(path)


def test_subject_country_is_upper_cased(tmp_path):
    cfg = load_config(write(tmp_path, renewal("subject = { Country = 'ch', Locality = 'Z' }")))
    assert cfg.expressways[0].renewal is not None
    assert cfg.expressways[0].renewal.subject == (("Country", "CH"), ("Locality", "Z"))


def test_valid_hosts_still_load(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            BOX + "endpoints = ['[2001:db8::1]:5061', '10.1.2.3:443', 'x_y.example.com.:443',"
            " '7001']\ncluster = 'cl.example.com'\n",
        )
    )
    assert [e.host for e in cfg.expressways[0].endpoints] == [
        "2001:db8::1",
        "10.1.2.3",
        "x_y.example.com.",
        "e1.example.com",
    ]


# --- what only check-config and run can see: secrets and the database driver ----------------


def test_unset_env_and_missing_file_secrets_are_all_reported(tmp_path, monkeypatch):
    monkeypatch.delenv("CERTD_UNSET_PW", raising=False)
    path = write(
        tmp_path,
        "[daemon]\napi_token = 'file:missing-token'\n"
        + BOX
        + "username = 'admin'\npassword = 'env:CERTD_UNSET_PW'\n",
    )
    config = load_config(path)  # the file itself is fine
    with pytest.raises(ConfigError) as info:
        check_runtime(config)
    text = str(info.value)
    assert "daemon.api_token: cannot read secret file" in text
    assert "expressway[0] (e1).password: environment variable CERTD_UNSET_PW is not set" in text


def test_empty_secret_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CERTD_EMPTY_TOKEN", "  ")
    config = load_config(write(tmp_path, "[daemon]\napi_token = 'env:CERTD_EMPTY_TOKEN'\n"))
    with pytest.raises(ConfigError, match=r"daemon\.api_token: .*CERTD_EMPTY_TOKEN is empty"):
        check_runtime(config)
    token = tmp_path / "token"
    token.write_text("\n")
    token.chmod(0o600)
    config = load_config(write(tmp_path, "[daemon]\napi_token = 'file:token'\n"))
    with pytest.raises(ConfigError, match=r"daemon\.api_token: secret file .* is empty"):
        check_runtime(config)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite+pysqlite:///x.db", "is not an asyncio driver"),
        ("sqlite+nosuchdriver:///x.db", "SQLAlchemy has no database driver"),
        ("postgresql+psycopg://u@db/certd", "of driver 'postgresql+psycopg' is not installed"),
    ],
)
def test_state_driver_must_be_usable(tmp_path, url, message):
    if "psycopg" in url and importlib.util.find_spec("psycopg") is not None:
        pytest.skip("psycopg is installed here")
    config = load_config(write(tmp_path, f"[daemon]\nstate = '{url}'\n"))
    with pytest.raises(ConfigError, match=rf"daemon\.state: .*{re.escape(message)}"):
        check_runtime(config)


def test_default_sqlite_driver_is_usable(tmp_path):
    check_runtime(load_config(write(tmp_path, f"[daemon]\nstate = '{tmp_path / 's.db'}'\n")))


# --- the processes: both verbs refuse the same things, without a traceback ------------------

PROCESS_CASES = {
    "huge-duration": ("[daemon]\npoll_interval = '99999999999999999999999d'\n", "at most 36500d"),
    "deep-array": ("x = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    "unset-env-secret": (
        BOX + "username = 'admin'\npassword = 'env:CERTD_SURELY_UNSET'\n",
        "CERTD_SURELY_UNSET is not set",
    ),
    "missing-file-secret": ("[daemon]\napi_token = 'file:nope'\n", "cannot read secret file"),
    "driver": ("[daemon]\nstate = 'sqlite+pysqlite:///x.db'\n", "not an asyncio driver"),
}


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CERTD_SURELY_UNSET"}
    env["XDG_STATE_HOME"] = str(cwd / "xdg")
    return subprocess.run(
        [sys.executable, "-m", "expressway_certd.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("verb", ["check-config", "run"])
@pytest.mark.parametrize("case", sorted(PROCESS_CASES))
def test_check_config_and_run_refuse_the_same(tmp_path, verb, case):
    text, message = PROCESS_CASES[case]
    path = write(tmp_path, "[daemon]\nlisten = '127.0.0.1:0'\n" + text if "[daemon]" not in text
                 else text.replace("[daemon]\n", "[daemon]\nlisten = '127.0.0.1:0'\n", 1))  # fmt: skip
    args = ["check-config", str(path)] if verb == "check-config" else ["run", "-c", str(path)]
    result = run_cli(args, tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
