"""systemd's notify protocol (sd_notify(3)): state datagrams to $NOTIFY_SOCKET, and the watchdog.

The protocol is one datagram of newline-separated `KEY=value` lines sent to the unix socket
named by $NOTIFY_SOCKET (a path, or an abstract name written with a leading `@`). Outside
systemd the variable is unset and every call does nothing. The watchdog interval comes from
$WATCHDOG_USEC (honoured only when $WATCHDOG_PID is unset or ours, as sd_watchdog_enabled(3)
says); the daemon pings at half of it from its event loop, so a wedged loop stops the pings
and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("monitor.sdnotify")


def socket_address(environ: Mapping[str, str]) -> str | bytes | None:
    """The address to send to, or None when not run by systemd with Type=notify."""
    value = environ.get("NOTIFY_SOCKET", "")
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # Linux abstract namespace
    if value.startswith("/"):
        return value
    return None  # unset, or a vsock address we do not speak


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds within which systemd expects a WATCHDOG=1, or None when the watchdog is off."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 1_000_000


def message(**fields: str | int) -> bytes:
    """`READY=1`, `STATUS=...` and so on, one per line (values must not hold newlines)."""
    lines = []
    for key, value in fields.items():
        text = str(value)
        if "\n" in text:
            raise ValueError(f"sd_notify field {key} holds a newline")
        lines.append(f"{key}={text}")
    return "\n".join(lines).encode()


@dataclass(frozen=True)
class SystemdNotifier:
    """Sends state to systemd; a no-op when `address` is None."""

    address: str | bytes | None
    watchdog: float | None = None
    # failures in a row; logged on the first only (a full socket buffer would flood the log)
    _failures: list[int] = field(default_factory=lambda: [0], compare=False, repr=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        env = os.environ if environ is None else environ
        return cls(socket_address(env), watchdog_interval(env, os.getpid()))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """One datagram; False (logged once per call) when systemd could not be told."""
        if self.address is None:
            return False
        data = message(**fields)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(data, self.address)
        except OSError as exc:
            if self._failures[0] == 0:
                log.warning("cannot notify systemd", fields=sorted(fields), error=str(exc))
            self._failures[0] += 1
            return False
        if self._failures[0]:
            log.info("notifying systemd again", failed=self._failures[0])
            self._failures[0] = 0
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match READY=1 to this reload.
        return self.send(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)

    def stopping(self) -> bool:
        return self.send(STOPPING=1, STATUS="stopping")

    async def ping_watchdog(self) -> None:
        """WATCHDOG=1 at half the interval until cancelled; runs on the event loop on purpose."""
        if self.watchdog is None or self.address is None:
            return
        period = self.watchdog / 2
        while True:
            self.send(WATCHDOG=1)
            await asyncio.sleep(period)


async def cancel(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
