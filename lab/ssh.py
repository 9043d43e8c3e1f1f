"""A tiny line-oriented SSH CLI for the simulators (Expressway `xCommand Boot`, Unified CM `admin:`).

Password authentication only; each session reads one command per line and hands it to a
handler that returns the text to print. With `require_pty` a session that did not request a
terminal is refused, as the Unified CM platform CLI does (public clients such as
paramiko-expect open an interactive shell with a pty). Imports nothing from monitor/,
renewers/ or alerts/.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncssh

# (command line) -> (output text, keep the session open?)
CommandHandler = Callable[[str], Awaitable[tuple[str, bool]]]


class _Auth(asyncssh.SSHServer):
    def __init__(self, username: str, password: str) -> None:
        self._username = username
        self._password = password

    def begin_auth(self, username: str) -> bool:
        return True  # always ask for a password, even for unknown users

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == self._username and password == self._password


class LabSSHServer:
    """SSH on loopback with one account; `banner` is printed once, `prompt` before each command."""

    def __init__(
        self,
        username: str,
        password: str,
        handler: CommandHandler,
        *,
        prompt: str = "",
        banner: str = "",
        host: str = "127.0.0.1",
        port: int = 0,
        require_pty: bool = False,
    ) -> None:
        self.username = username
        self.password = password
        self.handler = handler
        self.prompt = prompt
        self.banner = banner
        self.host = host
        self.port = port
        self.require_pty = require_pty
        self.refused_without_pty = 0  # sessions refused for lack of a terminal, for tests
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.commands: list[str] = []  # every command line received, for tests
        self._acceptor: asyncssh.SSHAcceptor | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def known_hosts_line(self) -> str:
        """A known_hosts line that pins this server's host key."""
        public = self.host_key.export_public_key("openssh").decode().strip()
        return f"[{self.host}]:{self.port} {public}\n"

    def write_known_hosts(self, path: Path) -> Path:
        path.write_text(self.known_hosts_line(), encoding="utf-8")
        return path

    async def start(self) -> LabSSHServer:
        self._acceptor = await asyncssh.create_server(
            lambda: _Auth(self.username, self.password),
            self.host,
            self.port,
            server_host_keys=[self.host_key],
            process_factory=self._session,
            encoding="utf-8",
            line_editor=False,
        )
        self.port = self._acceptor.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
            with contextlib.suppress(Exception):
                await self._acceptor.wait_closed()
            self._acceptor = None

    async def _session(self, process: asyncssh.SSHServerProcess[str]) -> None:
        try:
            if self.require_pty and process.get_terminal_type() is None:
                self.refused_without_pty += 1
                process.stderr.write("This CLI needs an interactive terminal (request a pty)\n")
                return
            if self.banner:
                process.stdout.write(self.banner)
            while True:
                if self.prompt:
                    process.stdout.write(self.prompt)
                line = await process.stdin.readline()
                if not line:
                    break
                command = line.strip()
                if not command:
                    continue
                self.commands.append(command)
                output, keep_open = await self.handler(command)
                process.stdout.write(output)
                if not keep_open:
                    break
        except (asyncssh.Error, ConnectionError, BrokenPipeError):
            pass
        finally:
            with contextlib.suppress(Exception):
                process.exit(0)
