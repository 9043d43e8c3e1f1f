"""`expressway-certd demo --once` on a clean machine: lab up, daemon polls, report printed."""

from __future__ import annotations

import subprocess
import sys


def test_demo_once(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "demo", "--once", "--listen", "127.0.0.1:0",
         "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "9 lab endpoints" in out
    assert out.count("EXPIRES WITHIN 7 DAYS") == 5  # every port of expe1
    assert "EKU: missing TLS Web Client Authentication, which X14.3 Expressway-C requires" in out
    assert "metrics  http://127.0.0.1:" in out
    assert (tmp_path / "state.db").exists()
    assert "FAILED" not in out
