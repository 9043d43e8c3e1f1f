"""The shipped systemd unit: `systemd-analyze verify` clean, exposure <= 2.0, and still able to
do the job (write its state, open outbound TCP/UDP, bind its port, read its config)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import need_binary

UNIT = Path(__file__).resolve().parents[2] / "deploy/systemd/expressway-certd.service"


def settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def installed_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's entry point (verify checks that the
    binary exists)."""
    binary = Path(sys.executable).parent / "expressway-certd"
    assert binary.exists(), "install the package (make venv) first"
    unit = tmp_path / "expressway-certd.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/expressway-certd", str(binary)))
    return unit


def test_verify_is_clean(tmp_path):
    tool = need_binary("systemd-analyze")
    unit = installed_copy(tmp_path)
    result = subprocess.run(
        [tool, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr


def test_exposure_is_two_or_lower():
    tool = need_binary("systemd-analyze")
    result = subprocess.run(
        [tool, "security", "--offline=yes", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


def test_the_service_can_still_do_its_job():
    s = settings(UNIT.read_text())
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] and s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    # its state directory is writable under ProtectSystem=strict, private to it
    assert s["ProtectSystem"] == ["strict"] and s["StateDirectory"] == ["expressway-certd"]
    assert s["StateDirectoryMode"] == ["0700"]
    # outbound TLS/SSH/HTTPS/PostgreSQL and its listening port: IP sockets, no network sandbox
    families = s["RestrictAddressFamilies"][0].split()
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= set(families)
    for forbidden in ("PrivateNetwork", "IPAddressDeny", "SocketBindDeny"):
        assert forbidden not in s, forbidden
    # the system-call filter keeps what an asyncio network service needs
    assert "@system-service" in s["SystemCallFilter"][0]
    assert not any("@network-io" in f for f in s["SystemCallFilter"])
    # its config (/etc/expressway-certd) stays readable; nothing hides /etc
    assert not any(
        "/etc" in v for k in ("InaccessiblePaths", "TemporaryFileSystem") for v in s.get(k, [])
    )
    # the process_* metrics need /proc/stat (boot time)
    assert "ProcSubset" not in s
