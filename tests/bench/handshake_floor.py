"""The floor of a TLS scan in CPython: a cold process that only connects and completes the TLS
handshake to each endpoint, nothing else (no certificate parsing, no verdict, no lint, no
output beyond two counts).

The same interpreter, the same `ssl` module (the interpreter's OpenSSL) and asyncio as
`expressway-certd scan`, the same concurrency, the same way of driving the handshake (memory
BIOs under an `asyncio.Protocol`, which costs less than asyncio's SSL transport), no SNI for an
address (as ours). Two contexts:

- no `--ca-file`: verification off (`CERT_NONE`), the handshake alone;
- `--ca-file ROOT`: `ssl.create_default_context(cafile=ROOT)` with `check_hostname` off, so
  OpenSSL verifies the served chain against ROOT inside the handshake (a chain that does not
  verify fails the handshake and is counted as failed).

Run by tests/bench/bench_scan.py as `python handshake_floor.py [--ca-file ROOT] [--concurrency
N] HOST:PORT ...`; prints `{"ok": N, "failed": M}` and exits 0. It imports nothing of this
project, so its start is the interpreter's, `ssl`'s and asyncio's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
from collections.abc import Sequence


class _Handshake(asyncio.Protocol):
    """A TLS client handshake over memory BIOs; `done` resolves when it completes or fails."""

    def __init__(self, ctx: ssl.SSLContext, loop: asyncio.AbstractEventLoop) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._tls = ctx.wrap_bio(self._in, self._out, server_hostname=None)
        self._transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._step()

    def data_received(self, data: bytes) -> None:
        self._in.write(data)
        self._step()

    def eof_received(self) -> bool | None:
        self._end(ConnectionResetError("EOF during the handshake"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc or ConnectionResetError("closed during the handshake"))

    def _end(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)

    def _step(self) -> None:
        if self.done.done():
            return
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._send()
            return
        except ssl.SSLError as exc:
            self._send()
            self._end(exc)
            return
        self._send()
        self.done.set_result(None)

    def _send(self) -> None:
        data = self._out.read()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)


def context(ca_file: str | None) -> ssl.SSLContext:
    """Verification off, or the stdlib's default client context trusting only `ca_file`."""
    if ca_file is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = False  # the farm is probed by address; verify_mode stays CERT_REQUIRED
    return ctx


async def handshake(ctx: ssl.SSLContext, host: str, port: int, timeout: float) -> bool:
    """One connection and one completed handshake; True when it completed (and verified)."""
    loop = asyncio.get_running_loop()
    transport: asyncio.BaseTransport | None = None
    try:
        async with asyncio.timeout(timeout):
            transport, protocol = await loop.create_connection(
                lambda: _Handshake(ctx, loop), host, port
            )
            await protocol.done
        return True
    except (OSError, ssl.SSLError, TimeoutError):
        return False
    finally:
        if transport is not None:
            transport.abort()  # type: ignore[attr-defined]


async def scan(
    ctx: ssl.SSLContext, endpoints: Sequence[tuple[str, int]], concurrency: int, timeout: float
) -> int:
    """How many of the endpoints completed the handshake, `concurrency` at a time."""
    slots = asyncio.Semaphore(concurrency)

    async def one(host: str, port: int) -> bool:
        async with slots:
            return await handshake(ctx, host, port, timeout)

    results = await asyncio.gather(*(one(h, p) for h, p in endpoints))
    return sum(results)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="handshake_floor", description=__doc__)
    parser.add_argument("--ca-file", help="verify each chain against this bundle in the handshake")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("endpoints", nargs="+", metavar="HOST:PORT")
    args = parser.parse_args(argv)
    endpoints = [(h, int(p)) for h, _, p in (e.rpartition(":") for e in args.endpoints)]
    ok = asyncio.run(scan(context(args.ca_file), endpoints, args.concurrency, args.timeout))
    sys.stdout.write(json.dumps({"ok": ok, "failed": len(endpoints) - ok}) + "\n")


if __name__ == "__main__":
    main()
