"""DNS-01 through an operator's command, like certbot's manual hooks:
`COMMAND present|cleanup DOMAIN TXT_NAME TXT_VALUE` (also in CERTD_* environment variables)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import timedelta

from expressway_certd.renewers.ca.base import ConnectorBase, Presentation


class HookSolver:
    """Runs the hook; exit code 0 means the TXT record is published and visible."""

    challenge_type = "dns-01"

    def __init__(self, owner: ConnectorBase, command: tuple[str, ...], timeout: timedelta) -> None:
        if not command:
            raise owner.error("config", "hook is empty", "set hook to a command", reason="config")
        self._owner = owner
        self.command = command
        self.timeout = timeout.total_seconds()

    def __repr__(self) -> str:
        return f"HookSolver({self.command[0]!r})"

    async def _run(self, action: str, item: Presentation) -> None:
        env = {
            **os.environ,
            "CERTD_ACTION": action,
            "CERTD_DOMAIN": item.domain,
            "CERTD_TXT_NAME": item.txt_name,
            "CERTD_TXT_VALUE": item.txt_value,
            "CERTD_TOKEN": item.token,
        }
        step = f"hook {action}"
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command,
                action,
                item.domain,
                item.txt_name,
                item.txt_value,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise self._owner.error(
                step,
                f"cannot run {self.command[0]!r} ({exc.strerror})",
                "set hook to an executable path",
                reason="hook",
            ) from None
        try:
            async with asyncio.timeout(self.timeout):
                output, _ = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise self._owner.error(
                step,
                f"{self.command[0]!r} did not finish within {self.timeout:.0f}s",
                "make the hook return once the record is published, or raise hook_timeout",
                reason="hook",
                retryable=True,
            ) from None
        if proc.returncode != 0:
            tail = " ".join(output.decode("utf-8", "replace").split()[-40:])
            raise self._owner.error(
                step,
                f"{self.command[0]!r} exited with {proc.returncode}: {tail or 'no output'}",
                "run the hook by hand with the same arguments to see why",
                reason="hook",
                retryable=True,
            )

    async def present(self, item: Presentation) -> None:
        await self._run("present", item)

    async def cleanup(self, item: Presentation) -> None:
        await self._run("cleanup", item)

    async def aclose(self) -> None:
        return None
