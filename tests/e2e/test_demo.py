"""`expressway-certd demo --once` on a clean machine: the whole renewal cycle on the lab."""

from __future__ import annotations

import subprocess
import sys

from expressway_certd.renewers.pipeline import STAGES


def test_demo_once(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "expressway_certd.cli", "demo", "--once", "--listen", "127.0.0.1:0",
         "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for stage in STAGES:
        assert f"expe-c1    {stage:<10} ok" in out, stage
    assert "new CA trusted by expe-c1 (+2), expe-e1 (+2), cucm1" in out
    assert "traversal zone  Active" in out and "Unified CM zone Active" in out
    assert "now serves CN=Lab EST Issuing CA" in out
    assert "metrics  http://127.0.0.1:" in out
    assert (tmp_path / "lab" / "state.db").exists()
    assert "Traceback" not in proc.stderr
