"""scripts/build-libest.sh without the network: it refuses files whose SHA-256 is not the
pinned one, and a finished build makes a second run do nothing."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-libest.sh"
POOL = "pool/main/libe/libest"


def run(cache: Path, mirror: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={"PATH": "/usr/bin:/bin", "LIBEST_CACHE": str(cache), "LIBEST_MIRROR": mirror},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def pinned(name: str) -> str:
    match = re.search(rf'^{name}="([^"]*)"', SCRIPT.read_text(), re.MULTILINE)
    assert match, name
    return match.group(1)


def test_a_file_with_another_sha256_is_refused_and_not_kept(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    (mirror / POOL).mkdir(parents=True)
    (mirror / POOL / pinned("ORIG")).write_bytes(b"not Debian's tarball\n")
    done = run(tmp_path / "cache", f"file://{mirror}")
    assert done.returncode == 1
    assert f"REFUSED {pinned('ORIG')}" in done.stderr
    assert pinned("ORIG_SHA256") in done.stderr
    downloads = tmp_path / "cache" / f"libest-{pinned('VERSION')}" / "downloads"
    assert list(downloads.iterdir()) == []


def test_a_finished_build_is_not_redone(tmp_path: Path) -> None:
    build = tmp_path / "cache" / f"libest-{pinned('VERSION')}"
    (build / "inst" / "bin").mkdir(parents=True)
    server = build / "inst" / "bin" / "estserver"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    stamp = f"{pinned('ORIG_SHA256')} {pinned('DEB_SHA256')} {pinned('CONFIGURE_FLAGS')}"
    (build / ".built").write_text(stamp + "\n")
    done = run(tmp_path / "cache", "file:///nonexistent")  # any download would fail
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert server.read_text() == "#!/bin/sh\n"
