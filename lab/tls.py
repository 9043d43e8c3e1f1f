"""Lab TLS listeners: serve a certificate chain on loopback, directly or after XMPP STARTTLS,
and the misbehaving endpoints a prober must survive (hang, trickle, not TLS).

The served certificate can be swapped at run time (what a restart does on a simulated box).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from dataclasses import dataclass, field
from pathlib import Path

MODES = ("tls", "xmpp", "hang", "trickle", "plain", "reset")

_XMPP_FEATURES = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' id='lab' from='lab' version='1.0'>"
    b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>"
    b"</starttls></stream:features>"
)
_XMPP_PROCEED = b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def hold_port(host: str, port: int) -> socket.socket | None:
    """A bound, not listening, TCP socket on host:port (None if the port is taken already).

    Connections to it are refused, as to a closed port, but no other socket can take the port
    meanwhile: a box that is down for a restart comes back on its own ports even on a busy
    machine, where the kernel hands a just-freed port to the next outgoing connection."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        return None
    return sock


@dataclass
class LabListener:
    """One listening socket on loopback; `mode` is one of MODES."""

    mode: str = "tls"
    host: str = "127.0.0.1"
    port: int = 0
    context: ssl.SSLContext | None = None
    trickle_interval: float = 0.5
    up: bool = True
    _server: asyncio.Server | None = field(default=None, repr=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, repr=False)
    _held: socket.socket | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown lab listener mode {self.mode!r}; one of {MODES}")
        if self.mode in ("tls", "xmpp") and self.context is None:
            raise ValueError(f"mode {self.mode!r} needs an ssl context")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def set_cert(self, cert_file: Path, key_file: Path) -> None:
        """Serve another certificate from the next connection on."""
        self.context = server_context(cert_file, key_file)

    async def start(self) -> LabListener:
        held, self._held = self._held, None
        if held is not None:  # listen on the port kept by stop(hold=True)
            self._server = await asyncio.start_server(self._handle, sock=held)
        else:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.up = True
        return self

    async def stop(self, *, hold: bool = False) -> None:
        """Close the socket (connections are refused until start() again) and drop clients.
        `hold`: keep the port bound, not listening, for the next start() (a restart)."""
        self.up = False
        if not hold and self._held is not None:
            self._held.close()
            self._held = None
        if self._server is not None:
            self._server.close()
            if hold and self._held is None:
                self._held = hold_port(self.host, self.port)
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "hang":
            await asyncio.sleep(3600)  # accept TCP, never answer
            return
        if self.mode == "trickle":
            await reader.read(1)
            # A handshake record header announcing 16 KiB, then its body a byte at a time.
            writer.write(b"\x16\x03\x03\x40\x00")
            for _ in range(7200):
                writer.write(b"\x00")
                await writer.drain()
                await asyncio.sleep(self.trickle_interval)
            return
        if self.mode == "plain":
            await reader.read(1024)
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        if self.mode == "reset":
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        if self.mode == "xmpp":
            await _read_element(reader, b"<stream:stream")  # the client's stream header
            writer.write(_XMPP_FEATURES)
            await writer.drain()
            await _read_element(reader, b"<starttls")
            writer.write(_XMPP_PROCEED)
            await writer.drain()
        assert self.context is not None
        await writer.start_tls(self.context)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(1024), 30)


async def _read_element(reader: asyncio.StreamReader, start: bytes) -> bytes:
    """Read until the opening tag `start...>` has arrived (XML declarations are skipped)."""
    data = b""
    while True:
        index = data.find(start)
        if index >= 0 and b">" in data[index:]:
            return data
        chunk = await reader.read(4096)
        if not chunk or len(data) > 65536:
            raise ConnectionResetError("client went away during XMPP negotiation")
        data += chunk


async def closed_port(host: str = "127.0.0.1") -> int:
    """A port that refuses connections (bound once, then released)."""
    server = await asyncio.start_server(lambda r, w: None, host, 0)
    port: int = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port
