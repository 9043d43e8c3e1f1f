"""A small JSON-over-HTTP poster shared by the HTTP notifiers; errors never show URL paths."""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from expressway_certd.alerts.notify import NotifyError

RETRY_STATUSES = frozenset({408, 425, 429})


def origin(url: str) -> str:
    """scheme://host[:port] of a URL: what errors and logs may show (paths can hold tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class JSONPoster:
    """POSTs JSON to one receiver over one lazily opened aiohttp session."""

    def __init__(self, name: str, trust_anchor: Path | None) -> None:
        self.name = name
        self._trust_anchor = trust_anchor
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if self._trust_anchor is None:
            return True
        return ssl.create_default_context(cafile=str(self._trust_anchor))

    async def post(self, url: str, body: Any, headers: Mapping[str, str] | None = None) -> bytes:
        """POST `body` (JSON-ready, or bytes already encoded); return the answer's body."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl()),
                headers={"User-Agent": "expressway-certd"},
            )
        where = origin(url)
        try:
            async with self._session.post(
                url,
                data=data,
                headers={"Content-Type": "application/json", **(headers or {})},
                allow_redirects=False,
            ) as resp:
                answer = await resp.read()
                if 200 <= resp.status < 300:
                    return answer
                text = answer.decode("utf-8", "replace").strip().replace("\n", " ")[:200]
                raise NotifyError(
                    f"{self.name}: {where} answered HTTP {resp.status}"
                    + (f": {text}" if text else ""),
                    retryable=resp.status >= 500 or resp.status in RETRY_STATUSES,
                )
        except (aiohttp.ClientError, OSError) as exc:
            detail = str(exc).replace(url, where)
            raise NotifyError(
                f"{self.name}: cannot POST to {where}: {type(exc).__name__}"
                + (f": {detail}" if detail else "")
            ) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
