"""sd_notify over a real unix datagram socket standing in for systemd; the watchdog's loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time

import pytest

from expressway_certd.monitor.sdnotify import (
    SystemdNotifier,
    message,
    socket_address,
    watchdog_interval,
)


def test_addresses_and_watchdog_settings():
    assert socket_address({}) is None
    assert socket_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert socket_address({"NOTIFY_SOCKET": "@abstract/x"}) == b"\0abstract/x"
    assert socket_address({"NOTIFY_SOCKET": "vsock:2:1234"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42) == 30.0
    # meant for another process (e.g. we were forked by the service's main process)
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 42) is None
    assert watchdog_interval({}, 42) is None


def test_message_format_and_newlines_refused():
    assert message(READY=1, STATUS="watching 2 targets") == b"READY=1\nSTATUS=watching 2 targets"
    with pytest.raises(ValueError, match="STATUS"):
        message(STATUS="two\nlines")


@pytest.fixture
def systemd(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    yield sock
    sock.close()


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    with contextlib.suppress(BlockingIOError):
        while True:
            out.append(sock.recv(4096))
    return out


def test_states_reach_the_socket(systemd, tmp_path):
    n = SystemdNotifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    assert n.ready("watching 1 targets") and n.reloading() and n.stopping()
    got = drain(systemd)
    assert got[0] == b"READY=1\nSTATUS=watching 1 targets"
    assert got[1].startswith(b"RELOADING=1\nMONOTONIC_USEC=")
    assert got[2] == b"STOPPING=1\nSTATUS=stopping"


def test_outside_systemd_nothing_is_sent():
    n = SystemdNotifier.from_environ({})
    assert not n.enabled and not n.ready("x")


def test_abstract_socket(tmp_path):
    name = f"certd-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.setblocking(False)
    try:
        assert SystemdNotifier.from_environ({"NOTIFY_SOCKET": "@" + name}).send(WATCHDOG=1)
        assert drain(sock) == [b"WATCHDOG=1"]
    finally:
        sock.close()


async def test_a_blocked_event_loop_stops_the_watchdog_pings(systemd, tmp_path):
    n = SystemdNotifier(str(tmp_path / "notify"), watchdog=0.1)  # pings every 0.05 s
    loop = asyncio.get_running_loop()
    pinger = loop.create_task(n.ping_watchdog())
    try:
        async with asyncio.timeout(10):
            assert await loop.sock_recv(systemd, 4096) == b"WATCHDOG=1"
        drain(systemd)
        time.sleep(0.5)  # noqa: ASYNC251 - the loop is wedged for ten ping periods...
        assert drain(systemd) == []  # ...and systemd hears nothing
        async with asyncio.timeout(10):  # unwedged: the pings resume
            assert await loop.sock_recv(systemd, 4096) == b"WATCHDOG=1"
    finally:
        pinger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pinger


async def test_no_watchdog_no_pings(systemd, tmp_path):
    n = SystemdNotifier(str(tmp_path / "notify"), watchdog=None)
    await n.ping_watchdog()  # returns at once
    assert drain(systemd) == []
