"""Helpers for tests that run the daemon as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent  # the checkout: `-m tests...` resolves here


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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

    async def wait_for(self, path: str, predicate: Any, timeout: float = 20.0) -> Any:
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

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
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
