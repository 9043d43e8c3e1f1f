"""Property tests of the loader: whatever the file says, the outcome is a Config or a ConfigError.

Two generators: TOML text built from the file's own keys, headers and value shapes (so most
documents parse and reach the validators), and structures of the config's shape handed to
`parse_config` directly (values of every TOML type, including inf, nan, huge and deep ones).
"""

from __future__ import annotations

import copy
import tempfile
import tomllib
from datetime import UTC, date, datetime, time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expressway_certd.config import load_config, parse_config
from expressway_certd.monitor.config import Config
from expressway_certd.monitor.errors import ConfigError

KEYS = {
    "daemon": [
        "listen", "state", "poll_interval", "probe_timeout", "concurrency", "jitter",
        "expiry_windows", "history", "audit_retention", "trust_bundle", "system_roots",
        "log_level", "log_format", "data_dir", "api_token", "api_read_token", "renewal_check",
        "client_cert_check",
    ],
    "expressway": [
        "name", "address", "role", "endpoints", "cluster", "version", "username", "password",
        "api_port", "api_ca_file", "ca_file", "ssh_port", "ssh_known_hosts", "traversal_peer",
        "unified_cm", "renewal",
    ],
    "renewal": [
        "ca", "renew_before", "approval", "maintenance_window", "extra_sans", "key_length",
        "digest", "subject", "verify_timeout",
    ],
    "unified_cm": [
        "name", "nodes", "username", "password", "api_port", "soap_port", "ssh_port",
        "api_ca_file", "ssh_known_hosts", "trust_stores", "restart_services",
        "maintenance_window",
    ],
    "ca": [
        "kind", "trust_anchor", "timeout", "directory", "challenge", "hook", "hook_timeout",
        "email", "eab_kid", "eab_hmac", "profile", "http01_listen", "rfc2136", "url",
        "username", "password", "client_cert", "client_key", "operation", "ekus", "template",
        "auth", "csr_dir", "chain", "poll",
    ],
    "notifier": [
        "name", "kind", "events", "min_severity", "throttle", "timeout", "retries", "url",
        "trust_anchor", "resolve_timeout", "token", "room_id", "api_url", "secret", "headers",
        "host", "port", "starttls", "username", "password", "from", "to",
    ],
}  # fmt: skip

# Values an operator might plausibly write, and the edges that used to crash.
PLAUSIBLE = [
    "e1", "c", "e", "X15.4", "e1.example.com", "[2001:db8::1]:443", "[zzzz::1]:443", "a b:443",
    "127.0.0.1:0", "0.0.0.0:9464", "5061", "30d", "1/3", "0.5s", "99999999999999999999999d",
    "inf", "env:CERTD_FUZZ_UNSET", "file:nope", "env:", "0 2 * * 6", "0 2 30 2 *", "*",
    "acme", "est", "adcs", "manual", "dns-01", "hook", "http-01", "https://ca.example/certsrv",
    "https://est.example/.well-known/est", "http://am:9093", "a@b.example", "Europe/Berlin",
    "sqlite:///x.db", "postgresql://u@db/x", "mysql://x", "CH", "CHE", "\u0000", "\x1b[31m",
    "²", "\u0661\u0662s", "a 'b", "~nouser/x", "http://[::1", "https://[x", "https://h:99999/", "serverAuth", "auto", "manual-if-ca-changed", "tomcat", "json", "debug",
]  # fmt: skip

scalars = st.one_of(
    st.sampled_from(PLAUSIBLE),
    st.text(max_size=20),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.dates(),
    st.datetimes(timezones=st.just(UTC)),
    st.times(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from([*PLAUSIBLE[:5], "cron", "port", "host", "Country"]), inner, max_size=4
        ),
    ),
    max_leaves=12,
)


def section(keys: list[str]) -> st.SearchStrategy[dict[str, object]]:
    return st.dictionaries(st.sampled_from(keys), values, max_size=8)


expressway = st.builds(
    lambda base, renewal: {**base, **({"renewal": renewal} if renewal is not None else {})},
    section(KEYS["expressway"]),
    st.none() | section(KEYS["renewal"]),
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "daemon": section(KEYS["daemon"]) | values,
        "expressway": st.lists(expressway, max_size=3) | values,
        "unified_cm": st.lists(section(KEYS["unified_cm"]), max_size=2) | values,
        "ca": st.dictionaries(
            st.sampled_from(["hand", "le", "x y"]), section(KEYS["ca"]), max_size=2
        )
        | values,
        "notifier": st.lists(section(KEYS["notifier"]), max_size=2) | values,
        "bogus": values,
    },
)

FILE = Path("/nonexistent/certd.toml")


def only_config_or_config_error(call: object) -> None:
    try:
        result = call()  # type: ignore[operator]
    except ConfigError as exc:
        assert str(exc).startswith(str(FILE)), str(exc)
        return
    assert isinstance(result, Config)


@settings(max_examples=200, deadline=None)
@given(documents, st.booleans())
def test_structures_of_the_config_shape(data, check_files):
    only_config_or_config_error(lambda: parse_config(FILE, data, check_files=check_files))


# --- one value of a valid file replaced: reaches every validator -----------------------------

EXAMPLE = Path(__file__).parents[2] / "deploy" / "examples" / "full.toml"
# The kinds full.toml does not show, so that their validators are reached too.
OTHER_KINDS = """
[ca.le]
kind = "acme"
directory = "https://acme.example.com/directory"
email = "pki@example.com"
eab_kid = "kid"
eab_hmac = "env:EAB"
[ca.le.rfc2136]
server = "ns1.example.com:53"
tsig_key = "certd"
tsig_secret = "env:TSIG"
[ca.hooked]
kind = "acme"
directory = "https://acme.example.com/directory"
challenge = "hook"
hook = "/usr/local/bin/dns-hook --zone example.com"
[ca.web]
kind = "acme"
directory = "https://acme.example.com/directory"
challenge = "http-01"
http01_listen = "[::]:8080"
[ca.est]
kind = "est"
url = "https://est.example.com/.well-known/est/uc"
username = "certd"
password = "env:EST"
ekus = ["serverAuth", "clientAuth"]
[ca.hand]
kind = "manual"
csr_dir = "csrs"
poll = "10m"
[[notifier]]
name = "room"
kind = "webex"
token = "env:WEBEX"
room_id = "abc"
events = "*"
[[notifier]]
name = "hook"
kind = "webhook"
url = "https://hooks.example.com/x"
secret = "env:HOOK"
headers = { "X-Team" = "uc", "Authorization" = "env:AUTH" }
"""
BASE = tomllib.loads(EXAMPLE.read_text())
BASE["ca"].update(tomllib.loads(OTHER_KINDS)["ca"])
BASE["notifier"].extend(tomllib.loads(OTHER_KINDS)["notifier"])


def key_paths(value: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        out.append((*prefix, key))
        out.extend(key_paths(item, (*prefix, key)))
    return out


PATHS = key_paths(BASE)


def replaced(path: tuple[object, ...], value: object) -> dict[str, object]:
    data = copy.deepcopy(BASE)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


def test_the_example_itself_loads():
    assert isinstance(parse_config(FILE, BASE, check_files=False), Config)
    assert len(PATHS) > 150


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(PATHS), values)
def test_one_value_of_a_valid_file_replaced(path, value):
    only_config_or_config_error(
        lambda: parse_config(FILE, replaced(path, value), check_files=False)
    )


# --- TOML text ------------------------------------------------------------------------------


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(str(value), repr(value))
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, str):
        escaped = "".join(
            c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in value
        )
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + "}"
    raise AssertionError(value)


headers = st.sampled_from(
    ["[daemon]", "[[expressway]]", "[[unified_cm]]", "[ca.hand]", "[ca.le.rfc2136]",
     "[[notifier]]", "[expressway.renewal]", "[bogus]", "[daemon", "[[expressway]"]
)  # fmt: skip
all_keys = sorted({k for keys in KEYS.values() for k in keys})
lines = st.one_of(
    headers,
    st.builds(lambda k, v: f"{k} = {toml_value(v)}", st.sampled_from(all_keys), values),
    st.text(max_size=30),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(lines, max_size=25))
def test_arbitrary_toml_text(text_lines):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "certd.toml"
        path.write_text("\n".join(text_lines) + "\n", encoding="utf-8", errors="surrogatepass")
        try:
            result = load_config(path)
        except ConfigError as exc:
            assert str(exc).startswith(str(path.resolve())), str(exc)
            return
        assert isinstance(result, Config)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "certd.toml"
        path.write_bytes(data)
        try:
            assert isinstance(load_config(path), Config)
        except ConfigError as exc:
            assert str(exc).startswith(str(path.resolve()))
