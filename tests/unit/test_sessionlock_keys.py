"""Session lock keys (monitor/sessionlock.py): two signed 32-bit integers, as PostgreSQL's
`pg_try_advisory_lock(int4, int4)` takes them, the same for a name in every process."""

from __future__ import annotations

import subprocess
import sys

from expressway_certd.monitor.sessionlock import advisory_key

INT4 = range(-(2**31), 2**31)


def test_keys_fit_int4_and_tell_names_apart():
    names = [f"renewal:20261203-{i:08x}" for i in range(2000)] + ["lease:restart:c", "lease:cucm:u"]
    keys = [advisory_key(n) for n in names]
    assert all(a in INT4 and b in INT4 for a, b in keys)
    assert len(set(keys)) == len(names)
    assert any(a < 0 for a, _ in keys) and any(b < 0 for _, b in keys)  # the sign bit is used


def test_a_name_has_the_same_key_in_another_process():
    """Not Python's hash() (salted per process): every replica must lock the same key."""
    code = "from monitor.sessionlock import advisory_key; print(*advisory_key('renewal:x'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert tuple(int(v) for v in out.stdout.split()) == advisory_key("renewal:x")
