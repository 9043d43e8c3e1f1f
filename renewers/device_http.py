"""HTTPS plumbing shared by the device clients: verified TLS, Basic auth, CSRF header on
mutating calls, timeouts, and retries with backoff on connection errors and 5xx only.

Raises DeviceError (monitor.errors) with the target, the step and what to do; never includes
the password. Timeouts and TLS verification failures are not retried.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from expressway_certd.monitor.errors import ConfigError, DeviceError

log = structlog.get_logger(__name__)

CSRF_HEADER = "X-CSRF-Header"
CSRF_VALUE = "expressway-certd"
MUTATING = frozenset({"POST", "PUT", "DELETE", "PATCH"})


@dataclass(frozen=True)
class DeviceReply:
    """One HTTP answer: status, body text, and the `Message` of a JSON body when present."""

    status: int
    text: str

    def json(self) -> Any:
        try:
            return json.loads(self.text)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
            return None

    @property
    def message(self) -> str:
        body = self.json()
        if isinstance(body, dict):
            for key in ("Message", "message", "error", "Error"):
                if isinstance(body.get(key), str):
                    return str(body[key])
        return self.text.strip()[:200]


@dataclass(frozen=True)
class FilePart:
    """A multipart form field carrying a file."""

    field: str
    filename: str
    data: bytes
    content_type: str = "application/x-pem-file"


def tls_context(target: str, ca_file: Path | None, key: str = "api_ca_file") -> ssl.SSLContext:
    """A verifying client context: `ca_file` when given, else the system trust store.

    Shared by every client with the same CA file as long as the file is unchanged (its
    path, size and modification time), and by every client of the system trust store: a
    context loaded with the system roots holds about 0.8 MiB of OpenSSL memory, and each
    device client (several per renewal, one per box) used to load its own. A context is
    safe to share: connections only read it; nothing here changes one after it is made."""
    try:
        if ca_file is None:
            return _shared_context(None, _stamp(_system_cafile()))
        return _shared_context(str(ca_file), _stamp(str(ca_file)))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{target}: {key} {ca_file} cannot be loaded as a PEM CA bundle ({exc}); "
            "give a file with the CA certificate(s) that issued the management certificate"
        ) from exc


def _system_cafile() -> str | None:
    paths = ssl.get_default_verify_paths()
    return paths.cafile or paths.openssl_cafile


def _stamp(path: str | None) -> tuple[int, int]:
    """(size, mtime in ns) of `path`; a rewritten file gets a new context. (0, 0) when
    there is no such file (the system store may be a directory only)."""
    if path is None:
        return (0, 0)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (0, 0)
    return (st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _shared_context(ca_file: str | None, stamp: tuple[int, int]) -> ssl.SSLContext:
    """One verifying context per (CA file, its stamp); `stamp` is only part of the key."""
    del stamp
    if ca_file is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=ca_file)


class HttpApi:
    """A retrying HTTPS client bound to one device; open with `async with`."""

    def __init__(
        self,
        *,
        target: str,
        base_url: str,
        username: str,
        password: str,
        ca_file: Path | None,
        timeout: float,
        retries: int,
        backoff: float,
        product: str,
    ) -> None:
        self.target = target
        self.base_url = base_url.rstrip("/")
        self._auth = aiohttp.encode_basic_auth(username, password)
        self._ssl = tls_context(target, ca_file)
        self._ca_file = ca_file
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._product = product
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"HttpApi(target={self.target!r}, base_url={self.base_url!r})"

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def error(self, step: str, problem: str, fix: str) -> DeviceError:
        return DeviceError(f"{self.target}: {step}: {problem}; {fix}")

    async def request(
        self,
        method: str,
        path: str,
        *,
        step: str,
        json_body: Any = None,
        files: list[FilePart] | None = None,
        text_body: str | None = None,
        content_type: str = "text/plain",
        extra_headers: dict[str, str] | None = None,
        final: Callable[[DeviceReply], bool] | None = None,
        expect: tuple[int, ...] = (200, 201, 202, 204),
        allow: tuple[int, ...] = (),
        deadline: float | None = None,
        retries: int | None = None,
    ) -> DeviceReply:
        """Send one request; statuses in `expect` or `allow` are returned, others raise.

        5xx answers are retried unless `final(reply)` says the answer is the last word
        (a SOAP fault, for instance)."""
        await self.open()
        assert self._session is not None
        url = self.base_url + path
        headers = {"Authorization": self._auth, "Accept": "application/json, text/plain, */*"}
        if method in MUTATING:
            headers[CSRF_HEADER] = CSRF_VALUE
        if text_body is not None:
            headers["Content-Type"] = content_type
        headers.update(extra_headers or {})
        attempts = (self._retries if retries is None else retries) + 1
        client_timeout = aiohttp.ClientTimeout(total=deadline or self._timeout)
        reply: DeviceReply | None = None
        for attempt in range(1, attempts + 1):
            data: aiohttp.FormData | str | None = text_body
            if files:
                data = aiohttp.FormData()
                for part in files:
                    data.add_field(
                        part.field,
                        part.data,
                        filename=part.filename,
                        content_type=part.content_type,
                    )
            try:
                async with self._session.request(
                    method, url, headers=headers, json=json_body, data=data, timeout=client_timeout
                ) as resp:
                    reply = DeviceReply(resp.status, await resp.text(errors="replace"))
            except aiohttp.ClientSSLError as exc:
                where = (
                    f"api_ca_file {self._ca_file}" if self._ca_file else "the system trust store"
                )
                raise self.error(
                    step,
                    f"TLS verification of {url} failed ({exc.__class__.__name__}: {_short(exc)})",
                    f"check that {where} holds the CA that issued the {self._product}'s "
                    "management certificate and that the address matches its names",
                ) from exc
            except TimeoutError as exc:
                raise self.error(
                    step,
                    f"no answer from {url} within {client_timeout.total:g}s",
                    f"check the {self._product} is up and not overloaded; the operation was "
                    "not retried because it may still complete",
                ) from exc
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                if attempt < attempts:
                    await self._pause(step, attempt, f"connection error: {_short(exc)}")
                    continue
                raise self.error(
                    step,
                    f"cannot reach {url} after {attempts} attempts ({_short(exc)})",
                    f"check the address, the port and that the {self._product} is running",
                ) from exc
            except aiohttp.ClientError as exc:
                raise self.error(
                    step,
                    f"the HTTP exchange with {url} failed ({exc.__class__.__name__}: {_short(exc)})",
                    f"check that {self.base_url} is the {self._product}'s HTTPS API",
                ) from exc
            if reply.status >= 500 and attempt < attempts and not (final and final(reply)):
                await self._pause(step, attempt, f"HTTP {reply.status}")
                continue
            break
        assert reply is not None
        if reply.status in expect or reply.status in allow:
            return reply
        raise self._status_error(step, method, path, reply)

    async def _pause(self, step: str, attempt: int, reason: str) -> None:
        delay = self._backoff * (2 ** (attempt - 1))
        log.warning("device.retry", target=self.target, step=step, attempt=attempt, reason=reason)
        await asyncio.sleep(delay)

    def _status_error(self, step: str, method: str, path: str, reply: DeviceReply) -> DeviceError:
        said = f"{self._product} answered HTTP {reply.status}"
        if reply.message:
            said += f" ({reply.message!r})"
        if reply.status == 401:
            fix = (
                "check the username and the password secret, and that API access is enabled "
                "for this administrator account"
            )
        elif reply.status == 403:
            fix = "check the account's access level (read-write administrator) and CSRF settings"
        elif reply.status == 404:
            fix = f"{method} {path} does not exist on this box; check its version"
        elif reply.status >= 500:
            fix = f"the {self._product} failed internally; look at its event log and retry later"
        else:
            fix = f"the {self._product} refused {method} {path}; see its message"
        return self.error(step, said, fix)


def _short(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return text if len(text) < 200 else text[:197] + "..."
