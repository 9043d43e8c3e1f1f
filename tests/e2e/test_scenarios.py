"""`expressway-certd demo --once --scenario NAME`: each lab scenario runs to its end on the real
daemon and pipeline; the printed timeline and the simulators' state are checked."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from expressway_certd_lab.scenarios import SCENARIOS, scenario
from expressway_certd_lab.topology import Lab

from expressway_certd.cmd_demo import _demo
from expressway_certd.renewers.pipeline import ConfiguredDevices
from tests.keypool import KEY_POOL


class MinuteLeadClock:
    """UTC now, shifted ahead by under a minute so that its first reading is `lead` seconds
    before a whole minute; it runs at the real pace from there."""

    def __init__(self, lead: float) -> None:
        self.lead = lead
        self.offset: timedelta | None = None
        self.first: datetime | None = None  # the first reading

    def __call__(self) -> datetime:
        now = datetime.now(UTC)
        if self.offset is None:
            into_minute = now.second + now.microsecond / 1e6
            self.offset = timedelta(seconds=(60 - self.lead - into_minute) % 60)
            self.first = now + self.offset
        return now + self.offset


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "expressway_certd.cli", "demo", *args],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def test_list_scenarios_names_each_with_one_line():
    proc = _cli("--list-scenarios")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(SCENARIOS)
    assert {"acme-on-box", "cucm-window", "x15.5-client-cert"} <= set(SCENARIOS)
    assert all(len(line.split(None, 1)) == 2 for line in lines)


def test_unknown_scenario_names_the_known_ones():
    proc = _cli("--once", "--scenario", "no-such-case")
    assert proc.returncode == 2
    assert "no lab scenario 'no-such-case'" in proc.stderr and "acme-on-box" in proc.stderr


def test_acme_on_box_blocks_at_preflight_with_the_fix(tmp_path, capsys):
    seen: dict[str, object] = {}

    def observe(lab: Lab) -> None:
        e = lab.expressway_e
        seen.update(
            csr=e.csr_generated,
            uploads=e.uploads,
            restarts=e.restart_count,
            issuer=e.served_cert.issuer.rfc4514_string(),
            lab_root=lab.ca.root().cert.subject.rfc4514_string(),
            zones=[z.status()[0] for z in (lab.traversal_zone, lab.secure_zone)],
        )

    code = asyncio.run(
        _demo(tmp_path, "127.0.0.1:0", True, 120.0, scenario("acme-on-box"), observe)
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "expe-e1    snapshot   ok" in out
    assert "expe-e1    preflight  BLOCKED expe-e1: the box's own ACME scheduler is on" in out
    assert "turn off ACME on the Expressway-E (Maintenance > Security > ACME)" in out
    for later in ("csr", "submit", "trust", "install", "restart"):
        assert f"expe-e1    {later:<10}" not in out, later
    # The box was left alone: no CSR, no upload, no restart; the old certificate still serves.
    assert seen == {
        "csr": 0,
        "uploads": 0,
        "restarts": 0,
        "issuer": seen["lab_root"],
        "lab_root": seen["lab_root"],
        "zones": ["Active", "Active"],
    }


def test_cucm_window_uploads_trust_at_once_and_restarts_node_by_node_in_the_window(
    tmp_path, capsys
):
    seen: dict[str, object] = {}
    services = ["Cisco CallManager", "Cisco Tftp", "Cisco Tomcat"]

    def observe(lab: Lab) -> None:
        seen["log"] = list(lab.cucm.restart_log)
        seen["restarts"] = [
            {name: n for name, n in node.restarts.items() if n} for node in lab.cucm_nodes
        ]
        seen["zones"] = [z.status()[0] for z in (lab.traversal_zone, lab.secure_zone)]

    # The window opens on the first whole minute at least 20 s after the config is written;
    # on a daemon clock that reads 20.5 s before a whole minute then, that is 20.5 s later,
    # not anywhere up to 80 s. The lab's services restart in 0.4 s: poll them every 0.1 s.
    case = scenario("cucm-window")
    case = dataclasses.replace(case, lab_kwargs={**case.lab_kwargs, "csr_keys": KEY_POOL})
    clock = MinuteLeadClock(20.5)
    options = {
        "clock": clock,
        "devices": ConfiguredDevices(cucm_overrides={"poll_interval": 0.1}),
    }
    code = asyncio.run(
        _demo(tmp_path, "127.0.0.1:0", True, 200.0, case, observe, renewal_options=options)
    )
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()

    def at(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    trust = at("expe-c1    trust      ok      new CA trusted by")
    assert (
        "cucm1/127.0.0.1 (tomcat, callmanager), cucm1/127.0.0.2 (tomcat, callmanager)"
        in (lines[trust])
    )
    approve = at("expe-c1    approve    ok")
    waits = at("expe-c1    ucm-restart waits   until ")
    assert "waits for the maintenance window (" in lines[waits]
    # until the first whole minute at least 20 s after the config was written (the clock's
    # first reading)
    until = re.search(r"until (\S{19})", lines[waits])
    assert until is not None and clock.first is not None, lines[waits]
    opens = datetime.fromisoformat(until.group(1)).replace(tzinfo=UTC)
    assert opens.second == 0 and abs((opens - clock.first).total_seconds() - 20.5) < 0.01
    restarted = at("expe-c1    ucm-restart ok      Unified CM cucm1: 127.0.0.1 restarted")
    install = at("expe-c1    install    ok")
    assert trust < approve < waits < restarted < install < at("expe-c1    done")
    # The simulators: every service once per node, publisher first, never two at once.
    assert seen["restarts"] == [dict.fromkeys(services, 1)] * 2
    log = seen["log"]
    assert [(n, s) for n, s, edge in log if edge == "begin"] == [
        (node, s) for node in ("cucm1", "cucm2") for s in services
    ]
    assert [edge for _, _, edge in log] == ["begin", "end"] * 6
    assert seen["zones"] == ["Active", "Active"]


@pytest.mark.parametrize("name", ["acme-on-box"])
def test_scenario_from_the_command_line(tmp_path, name):
    proc = _cli("--once", "--listen", "127.0.0.1:0", "--dir", str(tmp_path), "--scenario", name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"scenario {name}" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_x15_5_client_cert_renews_both_certificates_and_zones_stay_active(tmp_path, capsys):
    """A C at X15.5 whose client certificate (copied at upgrade) expires first: the daemon
    renews it as its own renewal (kind client) from the private lab EST CA, and the server
    certificate in a second renewal, one after the other; the zones end Active."""
    seen: dict[str, object] = {}

    def observe(lab: Lab) -> None:
        c = lab.expressway_c
        ekus = c.client_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        seen.update(
            client=c.client_cert,
            served=c.served_cert,
            client_eku=list(ekus),
            lab_root=lab.ca.root().cert.subject,
            client_uploads=c.client_uploads,
            server_uploads=c.uploads,
            zones=[z.status()[0] for z in (lab.traversal_zone, lab.secure_zone)],
        )

    case = scenario("x15.5-client-cert")
    code = asyncio.run(_demo(tmp_path, "127.0.0.1:0", True, 120.0, case, observe))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Renewed 2 certificates in" in out
    # one renewal of each kind, each through every stage
    assert "EKU clientAuth (rule x15.5-client-certificate)" in out
    assert "EKU serverAuth (rule x15.5-server-certificate)" in out
    assert "restarted via api; the box presents the new client certificate" in out
    verified = [line for line in out.splitlines() if "expe-c1    verify     ok" in line]
    assert len(verified) == 2 and all("2 zones Active" in line for line in verified)
    assert "complete; client certificate installed" in out
    assert "complete; serving" in out
    assert seen["client_uploads"] == 1 and seen["server_uploads"] == 1
    assert seen["zones"] == ["Active", "Active"]
    client, served = seen["client"], seen["served"]
    assert isinstance(client, x509.Certificate) and isinstance(served, x509.Certificate)
    # both now from the private lab EST CA, not the lab root the boxes started with
    assert client.issuer.rfc4514_string() == "CN=Lab EST Issuing CA,O=expressway-certd lab"
    assert served.issuer == client.issuer and client.issuer != seen["lab_root"]
    assert ExtendedKeyUsageOID.CLIENT_AUTH in seen["client_eku"]  # type: ignore[operator]
    assert client != served and client.public_key() != served.public_key()
