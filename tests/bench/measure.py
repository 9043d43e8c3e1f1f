"""Measuring other processes from outside (CPU and RSS from /proc), a lean HTTP/1.1 client for
loopback, and the table the benchmarks print."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all its threads, live and exited), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process: resident now and its peak, in bytes."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


def sqlite_size(path: Path) -> tuple[int, dict[str, int]]:
    """(bytes on disk of a SQLite database with its -wal file, rows per table), read-only."""
    size = sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = {t: int(db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}
    return size, rows


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; load average {load}"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(host: str, port: int, path: str, timeout: float = 30.0) -> tuple[int, bytes, float]:
    """One GET on a fresh connection: (status, body, seconds until the whole body arrived)."""
    return asyncio.run(_one_get(host, port, path, timeout))


async def _one_get(host: str, port: int, path: str, timeout: float) -> tuple[int, bytes, float]:
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            started = time.perf_counter()
            status, body = await get(reader, writer, host, path)
            return status, body, time.perf_counter() - started
        finally:
            writer.close()


async def get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, path: str
) -> tuple[int, bytes]:
    """GET on a kept-alive connection; the server must send Content-Length (both ours and
    blackbox_exporter's do)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length)
    return status, body


def wait_http(host: str, port: int, path: str, timeout: float = 60.0) -> None:
    """Until the server answers `path` with 200 (it is up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _, _ = http_get(host, port, path, timeout=5)
            if status == 200:
                return
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answered http://{host}:{port}{path} in {timeout:g}s")
        time.sleep(0.2)


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table, columns padded to their widest cell."""
    cells = [list(headers)] + [list(r) + [""] * (len(headers) - len(r)) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [title, line]
    for n, row in enumerate(cells):
        out.append("|".join(f" {c:<{w}} " for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            out.append(line)
    out.append(line)
    return "\n".join(out)
