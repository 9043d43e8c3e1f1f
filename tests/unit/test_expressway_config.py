"""Config keys for the device clients: [[unified_cm]] and the per-expressway links and SSH keys."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from expressway_certd.config import parse_config
from expressway_certd.monitor.config import Config
from expressway_certd.monitor.errors import ConfigError
from expressway_certd.renewers.cucm import CucmClientConfig
from expressway_certd.renewers.pipeline import ConfiguredDevices

BASE = """
[[expressway]]
name = "expe-c1"
address = "c1.example.com"
role = "c"
username = "admin"
password = "env:C1_PW"
ssh_port = 2222
traversal_peer = "expe-e1"
unified_cm = "cucm"

[[expressway]]
name = "expe-e1"
address = "e1.example.com"
role = "e"

[[unified_cm]]
name = "cucm"
nodes = ["cucm-pub.example.com", "cucm-sub1.example.com"]
username = "platformadmin"
password = "env:CUCM_PW"
"""


def parse(text: str) -> Config:
    return parse_config(Path("/etc/certd.toml"), tomllib.loads(text), check_files=False)


def test_links_ssh_and_unified_cm_defaults() -> None:
    config = parse(BASE)
    c1 = config.target("expe-c1")
    assert (c1.ssh_port, c1.traversal_peer, c1.unified_cm) == (2222, "expe-e1", "cucm")
    assert config.target("expe-e1").ssh_port == 22
    ucm = config.unified_cm("cucm")
    assert ucm.nodes == ("cucm-pub.example.com", "cucm-sub1.example.com")
    assert (ucm.api_port, ucm.soap_port, ucm.ssh_port) == (443, 8443, 22)
    assert ucm.trust_stores == ("tomcat", "callmanager")
    assert ucm.restart_services == ("Cisco CallManager", "Cisco Tftp", "Cisco Tomcat")
    assert ucm.maintenance_window is None
    assert ucm.password in config.secrets()
    assert "CUCM_PW" in repr(ucm) and "Secret" in repr(ucm)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('traversal_peer = "expe-e1"', 'traversal_peer = "expe-e9"', "traversal_peer"),
        ('traversal_peer = "expe-e1"', 'traversal_peer = "expe-c1"', "traversal_peer"),
        ('role = "e"', 'role = "c"', "same role"),
        ('unified_cm = "cucm"', 'unified_cm = "other"', "no [[unified_cm]] named 'other'"),
        ('nodes = ["cucm-pub.example.com", "cucm-sub1.example.com"]', "", "nodes: is required"),
        ('nodes = ["cucm-pub.example.com", "cucm-sub1.example.com"]', "nodes = []", "non-empty"),
        ('password = "env:CUCM_PW"', 'password = "hunter2"', "secret reference"),
        ('username = "platformadmin"', 'username = "platformadmin"\ntrust_stores = ["foo"]', "foo"),
        ('username = "platformadmin"', 'username = "platformadmin"\nsoap_prt = 1', "soap_port"),
        (
            'username = "platformadmin"',
            'username = "platformadmin"\nmaintenance_window = { cron = "0 2 30 2 *" }',
            "unified_cm[0] (cucm).maintenance_window.cron: '0 2 30 2 *' never fires",
        ),
    ],
)
def test_mistakes_name_the_key(old: str, new: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(BASE.replace(old, new, 1))
    assert expected in str(err.value)
    assert "hunter2" not in str(err.value)


def test_unified_cm_maintenance_window() -> None:
    text = BASE.replace(
        'username = "platformadmin"',
        'username = "platformadmin"\n'
        'maintenance_window = { cron = "0 3 * * 0", timezone = "Europe/Berlin", duration = "2h" }',
    )
    window = parse(text).unified_cm("cucm").maintenance_window
    assert window is not None
    assert (window.cron, window.timezone, window.duration.total_seconds()) == (
        "0 3 * * 0", "Europe/Berlin", 7200,
    )  # fmt: skip


def test_unified_cm_only_on_expressway_c() -> None:
    text = BASE.replace('unified_cm = "cucm"\n', "").replace(
        'role = "e"', 'role = "e"\nunified_cm = "cucm"'
    )
    with pytest.raises(ConfigError, match="only an Expressway-C"):
        parse(text)


def test_configured_devices_pass_their_overrides_to_the_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("C1_PW", "c1-secret")
    monkeypatch.setenv("CUCM_PW", "cucm-secret")
    config = parse(BASE)
    ucm = config.unified_cm("cucm")
    plain = ConfiguredDevices().unified_cm(ucm)
    assert plain.config.poll_interval == CucmClientConfig.poll_interval
    tuned = ConfiguredDevices({"timeout": 7.0}, cucm_overrides={"poll_interval": 0.1})
    assert tuned.unified_cm(ucm).config.poll_interval == 0.1
    assert tuned.unified_cm(ucm).config.timeout == CucmClientConfig.timeout  # not the box's
    assert tuned.expressway(config.target("expe-c1")).config.timeout == 7.0
