"""The `[ca.NAME]` kinds are declared beside their connectors (renewers/ca/*_config.py) and
given to the core's loader by the composition root (expressway_certd/config.py): the loader
knows only the kinds it is given, a new kind needs no change in monitor/, and a kind's config
module loads none of the protocol libraries (docs/ARCHITECTURE.md, "Configuration")."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from expressway_certd.config import REGISTRY
from expressway_certd.monitor.config import parse_config_with
from expressway_certd.monitor.config_base import Secret, Section
from expressway_certd.monitor.config_ca import CAKind, CALimits
from expressway_certd.monitor.errors import ConfigError
from expressway_certd.renewers.ca.manual_config import MANUAL

FILE = Path("/etc/certd.toml")


@dataclass(frozen=True)
class ScepConfig:
    """A kind this release does not have, declared the way renewers/ca/*_config.py do."""

    name: str
    url: str
    challenge: Secret
    trust_anchor: Path | None = None
    trust_anchors: Path | None = None
    timeout: timedelta = timedelta(seconds=30)
    limits: CALimits = field(default_factory=CALimits)
    kind: str = "scep"

    def secrets(self) -> tuple[Secret, ...]:
        return (self.challenge,)


def parse_scep(file: Path, name: str, s: Section, limits: CALimits) -> ScepConfig:
    challenge = s.get_secret("challenge", file.parent)
    if challenge is None:
        raise s.error("challenge", "is required")
    return ScepConfig(name, s.get_str("url", required=True) or "", challenge, limits=limits)


SCEP = CAKind("scep", frozenset({"url", "challenge"}), parse_scep)


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
        "import renewers.ca.acme_config, renewers.ca.est_config, renewers.ca.adcs_config\n"
        "import renewers.ca.manual_config, renewers.ca.kinds, expressway_certd.config\n"
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
