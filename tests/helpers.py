"""Helpers for tests that run the daemon as a real process."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

REPO = Path(__file__).resolve().parent.parent  # the checkout: `-m tests...` resolves here


def need_binary(name: str) -> str:
    """Path of a Debian-packaged server binary; skip locally when absent, fail under CI."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; `make test` should have installed it")
        pytest.skip(f"{name} not installed (make test installs it)")
    return path


PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10_000
_handed_out: set[int] = set()


def ephemeral_ports() -> range:
    """The kernel's ephemeral range: where `bind(port 0)` and outgoing connections take ports."""
    try:
        low, high = (int(n) for n in PORT_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def port_share(worker: str, workers: int, below: int) -> range:
    """The ports `free_port` picks from for xdist worker `worker` ("gw3") of `workers`: its own
    slice of LOWEST_PORT..below-1, so two workers never pick the same port."""
    index = int(worker.removeprefix("gw") or 0)
    size = (below - LOWEST_PORT) // max(workers, 1)
    start = LOWEST_PORT + index * size
    return range(start, start + size)


def bindable(port: int) -> bool:
    """Nothing holds `port` on 127.0.0.1, TCP or UDP (named and the KDC listen on both)."""
    try:
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", port))
            udp.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def free_port() -> int:
    """A loopback port nothing uses now, for a server a test starts later.

    Not one from `bind(port 0)`: the kernel hands the same ephemeral ports to outgoing
    connections, so with xdist workers connecting all the time another test's client took such a
    port before the server bound it (Pebble's HTTP-01 port: "address already in use"). The port
    is drawn below the ephemeral range, from this worker's share, never twice in a process.
    """
    below = ephemeral_ports().start
    if below - LOWEST_PORT < 1000:  # a kernel with (nearly) every port ephemeral
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    share = port_share(
        os.environ.get("PYTEST_XDIST_WORKER", "gw0"),
        int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")),
        below,
    )
    for _ in range(200):
        port = share[secrets.randbelow(len(share))]
        if port not in _handed_out and bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port in {share.start}-{share.stop - 1} after 200 draws")


class DaemonProcess:
    """`expressway-certd run --config FILE` in a subprocess, with its stderr captured."""

    def __init__(
        self,
        config: Path,
        port: int,
        env: dict[str, str] | None = None,
        *,
        entry: Sequence[str] = ("-m", "expressway_certd.cli", "run"),
    ) -> None:
        self.config = config
        self.port = port
        self.env = {**os.environ, **(env or {})}
        self.entry = tuple(entry)  # what follows `python`, before `--config FILE`
        self.proc: asyncio.subprocess.Process | None = None
        self.log = config.parent / f"daemon-{port}.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> DaemonProcess:
        self._log_file = self.log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *self.entry, "--config", str(self.config),
            stdout=self._log_file, stderr=self._log_file, env=self.env, cwd=REPO,
        )  # fmt: skip
        return self

    async def get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session, session.get(self.base + path) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def wait_for(self, path: str, predicate: Any, timeout: float = 60.0) -> Any:
        """Poll `path` until `predicate(status, body)` holds. The bound is generous: under
        `make test` the daemon's interpreter starts on a machine busy with other workers."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.output()}")
            try:
                status, body = await self.get(path)
                last = (status, body)
                if predicate(status, body):
                    return body
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting on {path}; last {last!r}\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
                raise AssertionError(f"daemon ignored signal {sig}\n{self.output()}") from None
        self._log_file.close()
        assert self.proc.returncode is not None
        return self.proc.returncode
