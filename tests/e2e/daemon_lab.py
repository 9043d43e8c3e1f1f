"""The daemon as a real process (the service `expressway-certd run` starts) renewing
certificates of the lab, whose simulators live in the test process: config for a fast daemon,
the renewal API as the tests read it, and the simulators' counters to assert exact counts on."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from expressway_certd_lab.expressway import ExpresswaySim
from expressway_certd_lab.renewal import add_renewal, set_daemon_keys
from expressway_certd_lab.topology import Lab

from tests.helpers import DaemonProcess

API_TOKEN_ENV = "CERTD_TEST_API_TOKEN"


def daemon_config(
    lab: Lab,
    directory: Path,
    renewals: dict[str, str],
    ca_toml: str,
    *,
    port: int,
    poll_interval: str = "1s",
    trust: Sequence[x509.Certificate] = (),
) -> Path:
    """The lab's config with `renewal = {...}` per target, the CA tables, and a daemon that
    polls and resumes renewals every second or faster (API token from API_TOKEN_ENV);
    `trust`: roots added to the lab CA in the daemon's trust_bundle."""
    path = lab.write_config(directory / "certd.toml")
    text = path.read_text()
    if trust:
        bundle = directory / "trust-bundle.pem"
        pems = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in trust)
        bundle.write_bytes(lab.ca_bundle_path.read_bytes() + pems)
        line = f'trust_bundle = "{lab.ca_bundle_path}"'
        assert line in text, "the lab config names its CA bundle differently"
        text = text.replace(line, f'trust_bundle = "{bundle}"')
    for target, renewal in renewals.items():
        text = add_renewal(text, target, renewal)
    text = set_daemon_keys(
        text,
        listen=f"127.0.0.1:{port}",
        poll_interval=poll_interval,
        probe_timeout="0.9s",
        renewal_check="0.5s",
        api_token=f"env:{API_TOKEN_ENV}",
        log_level="info",
    )
    text = text.replace("[daemon]\n", "[daemon]\njitter = 0.0\n", 1)
    path.write_text(text + ca_toml)
    return path


@dataclass(frozen=True)
class BoxCounts:
    """What one Expressway simulator has done so far."""

    csrs: int
    uploads: int
    restarts: int

    @classmethod
    def of(cls, sim: ExpresswaySim) -> BoxCounts:
        return cls(sim.csr_generated, sim.uploads, sim.restart_count)

    def since(self, before: BoxCounts) -> BoxCounts:
        return BoxCounts(
            self.csrs - before.csrs, self.uploads - before.uploads, self.restarts - before.restarts
        )


class LabDaemon(DaemonProcess):
    """A daemon subprocess with helpers for the renewal API."""

    def __init__(
        self,
        config: Path,
        port: int,
        env: dict[str, str] | None = None,
        *,
        kill_at: str | None = None,
        host: str | None = None,
        cucm_poll: float | None = 0.1,
    ) -> None:
        """The daemon runs through tests/e2e/seamed_daemon.py: `kill_at` ("[TARGET:]POINT"):
        its fault seam SIGKILLs the process at that point of the renewal pipeline; `host`:
        the host name it reports in its lease owner and replica ids; `cucm_poll`: it polls
        the lab's Unified CM services this often (they restart in a blink; the real client
        waits 2 s between polls). None of them: `expressway-certd run`."""
        self.token = secrets.token_urlsafe(16)
        seams = [
            *(("--kill-at", kill_at) if kill_at else ()),
            *(("--host", host) if host else ()),
            *(("--cucm-poll", str(cucm_poll)) if cucm_poll else ()),
        ]
        entry = ("-m", "tests.e2e.seamed_daemon", *seams) if seams else None
        super().__init__(
            config,
            port,
            env={API_TOKEN_ENV: self.token, **(env or {})},
            **({"entry": entry} if entry else {}),
        )

    async def ready(self, timeout: float = 60.0) -> LabDaemon:
        await self.wait_for("/healthz", lambda status, _: status == 200, timeout)
        return self

    async def renewals(self, target: str | None = None) -> list[dict[str, Any]]:
        status, body = await self.get("/api/v1/renewals" + (f"?target={target}" if target else ""))
        assert status == 200, body
        return list(body)

    async def renewal(self, renewal_id: str) -> dict[str, Any]:
        status, body = await self.get(f"/api/v1/renewals/{renewal_id}")
        assert status == 200, body
        return dict(body)

    async def renew(self, target: str) -> dict[str, Any] | None:
        """POST /api/v1/targets/TARGET/renew; None when the daemon died answering it."""
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"{self.base}/api/v1/targets/{target}/renew", headers=headers) as resp,
            ):
                assert resp.status == 202, await resp.text()
                return dict(await resp.json())
        except (aiohttp.ClientError, ConnectionError):
            return None

    async def wait_renewal(
        self,
        renewal_id: str,
        statuses: tuple[str, ...],
        stage: str | None = None,
        timeout: float = 30,
    ) -> dict[str, Any]:
        """The renewal (with its steps) once its status is one of `statuses` (at `stage`)."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.output()}")
            try:
                last = await self.renewal(renewal_id)
            except aiohttp.ClientError:
                pass
            else:
                if last["status"] in statuses and stage in (None, last["stage"]):
                    return last
                if last["status"] == "blocked" and "blocked" not in statuses:
                    raise AssertionError(f"renewal blocked: {last['message']}")
            await asyncio.sleep(0.1)
        raise AssertionError(f"renewal {renewal_id} still {last}\n{self.output()[-4000:]}")

    async def wait_killed(self, timeout: float = 30) -> int:
        """Wait until the test hook killed the daemon; its return code (-SIGKILL)."""
        assert self.proc is not None
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"daemon was not killed by the hook\n{self.output()}") from None
        self._log_file.close()
        return code

    async def __aenter__(self) -> LabDaemon:
        await self.start()
        return await self.ready()

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            await self.stop(signal.SIGTERM)


async def until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    """Wait until `condition()` holds (the simulators live in this process: poll them)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
