"""One aiohttp request for the HTTP-based connectors (EST, AD CS): TLS, timeouts and transport
errors turned into CARequestError that name the CA and say what to fix."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy

from renewers.ca.base import ConnectorBase

BROWSER_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36 expressway-certd"
)


def basic_auth(username: str, password: str) -> str:
    """The value of an HTTP Basic Authorization header (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


_TLS_FIX = (
    "check the URL points at the CA's HTTPS port; if the server requires a TLS client "
    "certificate (an RA certificate), set client_cert + client_key to one it trusts and check "
    "they belong together"
)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    def text(self, limit: int = 300) -> str:
        return " ".join(self.body[:limit].decode("utf-8", "replace").split())


async def send(
    owner: ConnectorBase,
    session: aiohttp.ClientSession,
    step: str,
    method: str,
    url: str,
    *,
    trust_fix: str,
    tls_fix: str = _TLS_FIX,
    **kwargs: object,
) -> Reply:
    """Send one request; transport and TLS failures become CARequestError."""
    try:
        async with session.request(method, url, **kwargs) as resp:  # type: ignore[arg-type]
            body = await resp.read()
            return Reply(resp.status, resp.headers, body)
    except aiohttp.ClientConnectorCertificateError as exc:
        raise owner.error(
            step,
            f"the TLS certificate of {url} does not verify ({exc.certificate_error})",
            trust_fix,
            reason="tls_verify",
        ) from None
    except aiohttp.ClientSSLError as exc:
        raise owner.error(
            step, f"TLS handshake with {url} failed ({exc})", tls_fix, reason="tls"
        ) from None
    except aiohttp.ClientConnectorError as exc:
        if exc.ssl is not None and isinstance(exc.os_error, ConnectionResetError):
            # Servers that demand a client certificate often just drop the handshake.
            raise owner.error(
                step,
                f"{url} closed the connection during the TLS handshake",
                tls_fix,
                reason="tls",
            ) from None
        raise _unreachable(owner, step, url, exc) from None
    except (aiohttp.ClientConnectionError, TimeoutError) as exc:
        if "certificate required" in str(exc).lower():  # TLS 1.3: alert after the handshake
            raise owner.error(
                step, f"{url} requires a TLS client certificate ({exc})", tls_fix, reason="tls"
            ) from None
        raise _unreachable(owner, step, url, exc) from None


def _unreachable(owner: ConnectorBase, step: str, url: str, exc: Exception) -> Exception:
    return owner.error(
        step,
        f"cannot reach {url} ({type(exc).__name__}: {exc or 'timed out'})",
        "check the URL, DNS and firewall; the request is retried later",
        reason="unreachable",
        retryable=True,
    )
