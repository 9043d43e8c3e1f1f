"""A throwaway PostgreSQL server on loopback (Debian `postgresql`), for store tests.

`postgres_server()` starts one (initdb, start, wait: seconds of a busy CI machine); the tests
share one per session (the `pg_server` fixture in tests/conftest.py) and each takes a fresh,
empty database of its own on it with `fresh_database()`: what a test stores, migrates or
locks (advisory locks, LISTEN/NOTIFY) stays inside its database."""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import free_port

_databases = itertools.count(1)


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh server; stops and removes it afterwards."""
    bindir = _pg_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; `make test` should have installed it")
        pytest.skip("PostgreSQL not installed (make test installs it)")
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:  # postgres refuses to run as root
        owner = pwd.getpwnam("postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="certd-pg-"))
    data = root / "data"
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = free_port()
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "certd", "--auth=trust",
         "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True,
    )  # fmt: skip
    proc = subprocess.Popen(
        [*prefix, str(bindir / "postgres"), "-D", str(data), "-p", str(port),
         "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}",
         "-c", "fsync=off"],
        stdout=subprocess.DEVNULL, stderr=(root / "log").open("wb"),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            ready = subprocess.run(
                [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((root / "log").read_text(errors="replace"))
            time.sleep(0.2)
        yield f"postgresql+asyncpg://certd@127.0.0.1:{port}/postgres"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(server_url: str, prefix: str = "certd_test") -> str:
    """Create an empty database on the server at `server_url`; its SQLAlchemy URL."""
    bindir = _pg_bin()
    assert bindir is not None, "postgres_server() has skipped or failed already"
    rest = server_url.split("@", 1)[1]  # 127.0.0.1:PORT/postgres
    host, port = rest.split("/", 1)[0].rsplit(":", 1)
    name = f"{prefix}_{os.getpid()}_{next(_databases)}"
    subprocess.run(
        [str(bindir / "createdb"), "-h", host, "-p", port, "-U", "certd", name],
        check=True, capture_output=True,
    )  # fmt: skip
    return server_url.rsplit("/", 1)[0] + f"/{name}"
