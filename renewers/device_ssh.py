"""Run one command on a device CLI over SSH (asyncssh, password auth, pinned host keys).

Used for what the HTTP APIs cannot do: Expressway `xCommand Boot` when the REST restart is
missing, and Unified CM `utils service restart Cisco Tomcat` at the `admin:` prompt.
The session requests a terminal (pty, `vt100`), as public clients of these CLIs do
(paramiko `invoke_shell`, paramiko-expect): the Unified CM platform CLI does not run commands
without one. Output is returned with CR LF turned into LF.
Raises DeviceError naming the target, the step and the fix; never includes the password.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from expressway_certd.monitor.errors import DeviceError


@dataclass(frozen=True)
class SshTarget:
    """Where and how to log in; `known_hosts` None means ~/.ssh/known_hosts."""

    target: str
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    known_hosts: Path | None = None
    timeout: float = 60.0
    term_type: str = "vt100"
    term_size: tuple[int, int] = (200, 50)  # wide enough that the CLI does not wrap lines


async def run_command(
    ssh: SshTarget,
    command: str,
    *,
    step: str,
    prompt: str | None = None,
    until: tuple[str, ...] = (),
) -> str:
    """Log in, wait for `prompt` if given, send `command`, and return what the device printed
    until one of `until` appears after the command (or the session ends)."""
    try:
        return await asyncio.wait_for(_run(ssh, command, prompt, until), ssh.timeout)
    except TimeoutError as exc:
        raise DeviceError(
            f"{ssh.target}: {step}: SSH session to {ssh.host}:{ssh.port} gave no complete "
            f"answer within {ssh.timeout:g}s; check the device CLI by hand"
        ) from exc
    except asyncssh.PermissionDenied as exc:
        raise DeviceError(
            f"{ssh.target}: {step}: SSH login as {ssh.username!r} was refused; "
            "check the username and the password secret"
        ) from exc
    except asyncssh.HostKeyNotVerifiable as exc:
        where = ssh.known_hosts or "~/.ssh/known_hosts"
        raise DeviceError(
            f"{ssh.target}: {step}: the SSH host key of {ssh.host}:{ssh.port} is not in {where}; "
            "add it after checking its fingerprint on the console (ssh-keyscan), "
            "or set ssh_known_hosts"
        ) from exc
    except (OSError, asyncssh.Error) as exc:
        raise DeviceError(
            f"{ssh.target}: {step}: SSH to {ssh.host}:{ssh.port} failed ({exc}); "
            "check the address, the SSH port and that SSH is enabled for the admin account"
        ) from exc


async def _run(ssh: SshTarget, command: str, prompt: str | None, until: tuple[str, ...]) -> str:
    known_hosts = str(ssh.known_hosts) if ssh.known_hosts else ()
    async with asyncssh.connect(
        ssh.host,
        port=ssh.port,
        username=ssh.username,
        password=ssh.password,
        known_hosts=known_hosts,
        client_keys=None,
        agent_path=None,
        preferred_auth="password,keyboard-interactive",
    ) as conn:
        process = await conn.create_process(
            encoding="utf-8", term_type=ssh.term_type, term_size=ssh.term_size
        )
        buffer = ""
        if prompt:
            while prompt not in buffer:
                chunk = await process.stdout.read(4096)
                if not chunk:
                    break
                buffer += chunk.replace("\r\n", "\n")
        process.stdin.write(command + "\n")
        output = ""
        while not any(marker in output for marker in until):
            chunk = await process.stdout.read(4096)
            if not chunk:
                break
            output += chunk.replace("\r\n", "\n")
        process.stdin.write_eof()
        process.close()
        return output
