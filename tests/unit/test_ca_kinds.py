"""The `[ca.NAME]` kinds are declared beside their connectors (renewers/ca/*_config.py) and
given to the core's loader by the composition root (expressway_certd/config.py): the loader
knows only the kinds it is given, a new kind needs no change in monitor/, a kind's config
module loads none of the protocol libraries, and each key is declared once: the parser's known
keys and defaults and the docs' key tables come from the declarations (docs/ARCHITECTURE.md,
"Configuration")."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from expressway_certd import config_docs
from expressway_certd.config import REGISTRY
from expressway_certd.monitor.config import parse_config_with
from expressway_certd.monitor.config_base import Secret, Section, key, required_key, toml_keys
from expressway_certd.monitor.config_ca import (
    COMMON_KEYS,
    CACommon,
    CAKind,
    CALimits,
    with_common,
)
from expressway_certd.monitor.errors import ConfigError
from expressway_certd.renewers.ca.acme_config import ACMEConfig, RFC2136Config
from expressway_certd.renewers.ca.adcs_config import ADCSConfig
from expressway_certd.renewers.ca.est_config import ESTConfig
from expressway_certd.renewers.ca.manual_config import MANUAL, ManualConfig

FILE = Path("/etc/certd.toml")


@dataclass(frozen=True)
class ScepConfig(CACommon):
    """A kind this release does not have, declared the way renewers/ca/*_config.py do."""

    name: str
    url: str = required_key("the SCEP server's URL")
    challenge: Secret = required_key("secret reference: the SCEP challenge password")
    retries: int = key(3, "how often a pending request is asked again")
    kind: str = "scep"

    def secrets(self) -> tuple[Secret, ...]:
        return (self.challenge,)


def parse_scep(file: Path, name: str, s: Section, common: CACommon) -> ScepConfig:
    challenge = s.get_secret("challenge", file.parent)
    if challenge is None:
        raise s.error("challenge", "is required")
    url = s.get_str("url", required=True) or ""
    retries = s.get_int("retries", ScepConfig.retries)
    return with_common(ScepConfig(name, url, challenge, retries), common)


SCEP = CAKind("scep", ScepConfig, parse_scep)


def parse(text: str, kinds: tuple[CAKind, ...]):
    return parse_config_with(FILE, tomllib.loads(text), ca_kinds=kinds, check_files=False)


def test_the_registry_lists_every_kind_in_the_documented_order() -> None:
    assert [k.name for k in REGISTRY] == ["acme", "est", "adcs", "manual"]


def test_the_loader_knows_only_the_kinds_it_is_given() -> None:
    with pytest.raises(ConfigError, match=r"ca\.x\.kind: must be one of manual; got 'acme'"):
        parse('[ca.x]\nkind = "acme"\ndirectory = "https://a.example/dir"\n', (MANUAL,))


def test_a_new_kind_needs_no_change_in_the_core() -> None:
    text = (
        '[ca.s]\nkind = "scep"\nurl = "https://scep.example/"\nchallenge = "env:SCEP"\n'
        "orders_per_hour = 5\n"
    )
    config = parse(text, (MANUAL, SCEP))
    ca = config.cas["s"]
    assert isinstance(ca, ScepConfig) and ca.limits == CALimits(orders_per_hour=5)
    assert Secret("env:SCEP", "ca.s.challenge") in config.secrets()
    with pytest.raises(
        ConfigError, match=r"ca\.s\.challnge: unknown key; did you mean 'challenge'"
    ):
        parse(text.replace("challenge =", "challnge ="), (MANUAL, SCEP))


def test_a_kinds_config_module_loads_no_protocol_library() -> None:
    heavy = ["acme", "josepy", "aiohttp", "spnego", "dns", "asyncssh"]
    code = (
        "import sys, json\n"
        "import expressway_certd.renewers.ca.acme_config, expressway_certd.renewers.ca.est_config\n"
        "import expressway_certd.renewers.ca.adcs_config, expressway_certd.renewers.ca.manual_config\n"
        "import expressway_certd.renewers.ca.kinds, expressway_certd.config\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == []


def test_every_secret_of_an_est_ca_is_resolved_at_start(tmp_path: Path) -> None:
    """`Config.secrets()` is what `check-config` and `run` resolve before anything starts: an
    encrypted EST client key's password is one of them (it was left out, so a missing one was
    found only at the first enrolment)."""
    cert, key = tmp_path / "ra.pem", tmp_path / "ra.key"
    cert.write_text("x")
    key.write_text("x")
    key.chmod(0o600)
    text = (
        '[ca.est]\nkind = "est"\nurl = "https://est.example/.well-known/est"\n'
        f'client_cert = "{cert}"\nclient_key = "{key}"\nclient_key_password = "env:RA_KEY_PW"\n'
    )
    config = parse(text, REGISTRY)
    assert [s.ref for s in config.secrets()] == ["env:RA_KEY_PW"]


# --- declared once: known keys, defaults and docs come from each kind's dataclass -------------

# The smallest valid table of each kind, and the dataclass built from the same values alone.
MINIMAL = {
    "acme": (
        'directory = "https://acme.example/dir"\nchallenge = "http-01"\n',
        ACMEConfig("c", "https://acme.example/dir", challenge="http-01"),
    ),
    "est": (
        'url = "https://est.example/.well-known/est"\nusername = "u"\npassword = "env:P"\n',
        ESTConfig("c", "https://est.example/.well-known/est", username="u",
                  password=Secret("env:P", "ca.c.password")),
    ),
    "adcs": (
        'url = "https://ca.example/certsrv"\ntemplate = "T"\nusername = "u"\npassword = "env:P"\n',
        ADCSConfig("c", "https://ca.example/certsrv", "T", username="u",
                   password=Secret("env:P", "ca.c.password")),
    ),
    "manual": ("", ManualConfig("c")),
}  # fmt: skip


def test_every_registered_kind_has_a_minimal_table_here() -> None:
    assert sorted(MINIMAL) == sorted(k.name for k in REGISTRY)


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_the_parser_defaults_are_the_declared_defaults(kind: str) -> None:
    """A key left out takes the dataclass's default (no default written twice)."""
    text, expected = MINIMAL[kind]
    assert parse(f'[ca.c]\nkind = "{kind}"\n{text}', REGISTRY).cas["c"] == expected


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_every_kind_takes_the_common_keys(kind: str) -> None:
    """The common keys are parsed once, for every kind, and reach its config."""
    text = (
        f'[ca.c]\nkind = "{kind}"\n{MINIMAL[kind][0]}trust_anchor = "/etc/a.pem"\n'
        'trust_anchors = "/etc/roots.pem"\ntimeout = "7s"\nconcurrent_orders = 2\n'
    )
    ca = parse(text, REGISTRY).cas["c"]
    assert (ca.trust_anchor, ca.trust_anchors) == (Path("/etc/a.pem"), Path("/etc/roots.pem"))
    assert (ca.timeout, ca.limits) == (timedelta(seconds=7), CALimits(concurrent_orders=2))


def test_known_keys_come_from_the_declarations() -> None:
    assert {
        "kind", "trust_anchor", "trust_anchors", "timeout", "orders_per_hour", "concurrent_orders",
    } == COMMON_KEYS  # fmt: skip
    assert {k.name: k.keys for k in REGISTRY} == {
        "acme": {"directory", "challenge", "hook", "hook_timeout", "email", "eab_kid",
                 "eab_hmac", "profile", "http01_listen", "rfc2136"},
        "est": {"url", "username", "password", "client_cert", "client_key",
                "client_key_password", "operation", "http_auth", "ekus"},
        "adcs": {"url", "template", "auth", "username", "password", "ekus"},
        "manual": {"csr_dir", "chain", "poll", "ekus"},
    }  # fmt: skip
    assert toml_keys(RFC2136Config) == {
        "server", "zone", "tsig_key", "tsig_secret", "tsig_algorithm", "propagation_timeout", "ttl",
    }  # fmt: skip


def test_a_declared_key_of_a_kind_is_accepted_and_a_misspelt_one_refused() -> None:
    parse('[ca.s]\nkind = "scep"\nurl = "https://s.example/"\nchallenge = "env:S"\nretries = 5\n',
          (SCEP,))  # fmt: skip
    with pytest.raises(ConfigError, match=r"ca\.s\.retry: unknown key; did you mean 'retries'"):
        parse('[ca.s]\nkind = "scep"\nurl = "https://s.example/"\nchallenge = "env:S"\nretry = 5\n',
              (SCEP,))  # fmt: skip


def test_a_new_kind_gets_its_key_table_from_its_declarations() -> None:
    """The docs generator (expressway_certd/config_docs.py) knows kinds only through the
    registry it is given: a made-up kind gets its table and its name in the `kind` row."""
    text = (
        "<!-- keys: ca-common -->\n<!-- end keys -->\n"
        "<!-- keys: ca-kind-scep -->\nstale\n<!-- end keys -->\n"
    )
    out = config_docs.render(text, (MANUAL, SCEP))
    common, scep = out.split("<!-- keys: ca-kind-scep -->")
    assert "| `kind` | required | `manual` or `scep` |" in common
    assert '| `timeout` | `"30s"` | per request |' in common
    assert "stale" not in scep
    assert "| `url` | required | the SCEP server's URL |" in scep
    assert "| `challenge` | required | secret reference: the SCEP challenge password |" in scep
    assert "| `retries` | `3` | how often a pending request is asked again |" in scep
    assert "`timeout`" not in scep  # the common keys have their own table
    assert "ca-kind-scep" in config_docs.tables((MANUAL, SCEP))


def test_a_kinds_sub_table_gets_its_own_key_table() -> None:
    tables = config_docs.tables(REGISTRY)
    assert "| `tsig_secret` | required | secret reference:" in tables["ca-kind-acme-rfc2136"]
    assert "`port`" not in tables["ca-kind-acme-rfc2136"]  # derived from `server`, not a key
    assert "| `rfc2136` | none |" in tables["ca-kind-acme"]
