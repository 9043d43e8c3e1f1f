"""What a SIGHUP reload applies, reports for restart, or refuses (expressway_certd.daemon.plan_reload)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from expressway_certd.config import parse_config
from expressway_certd.daemon import plan_reload
from expressway_certd.monitor.config import Config
from expressway_certd.monitor.errors import ConfigError

EST = """
[ca.corp-est]
kind = "est"
url = "https://est.example.com/.well-known/est/expressway"
username = "certd"
password = "env:EST_PASSWORD"
"""


def target(name: str, port: int = 443, extra: str = "") -> str:
    return f"""
[[expressway]]
name = "{name}"
address = "{name}.example.com"
endpoints = [{{ host = "{name}.example.com", port = {port} }}]
{extra}
"""


def config(text: str) -> Config:
    return parse_config(Path("/etc/certd.toml"), tomllib.loads(text), check_files=False)


def test_targets_added_removed_changed():
    old = config(target("a") + target("b") + target("c"))
    new = config(target("a") + target("b", port=8443) + target("d"))
    plan = plan_reload(old, new, renewing=False)
    assert (plan.added, plan.removed, plan.changed) == (("d",), ("c",), ("b",))
    assert plan.needs_restart == ()


def test_an_unchanged_file_changes_nothing():
    plan = plan_reload(config(target("a")), config(target("a")), renewing=False)
    assert (plan.added, plan.removed, plan.changed, plan.needs_restart) == ((), (), (), ())


def test_sections_that_need_a_restart_are_named():
    old = config(target("a"))
    new = config('[daemon]\npoll_interval = "1m"\n' + EST + target("a"))
    assert plan_reload(old, new, renewing=False).needs_restart == ("[daemon]", "[ca.*]")


def test_renewal_in_a_service_started_without_it_is_refused():
    old = config(EST + target("a"))
    new = config(EST + target("a", extra='renewal = { ca = "corp-est" }'))
    with pytest.raises(ConfigError, match="restart it to start renewing"):
        plan_reload(old, new, renewing=False)
    assert plan_reload(old, new, renewing=True).changed == ("a",)
