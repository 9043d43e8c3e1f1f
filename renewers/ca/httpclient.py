"""One aiohttp request for the HTTP-based connectors (EST, AD CS): TLS, timeouts and transport
errors turned into CARequestError that name the CA and say what to fix, and the one mapping of
HTTP error statuses to reason codes (`status_class`, `raise_for_status`) both connectors use."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy

from expressway_certd.renewers.ca.base import ConnectorBase

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


@dataclass(frozen=True)
class StatusWords:
    """How one connector words HTTP error answers; which status means what is shared.

    `server` names the server in messages ("the EST server"), `auth` says what a 401 refused
    ("our credentials", "ntlm authentication"); each `*_fix` tells the operator what to do.
    `bad_request_fix` replaces `refused_fix` for HTTP 400 (None: the same).
    """

    server: str
    auth: str
    auth_fix: str
    forbidden_fix: str
    not_found_fix: str
    server_error_fix: str
    refused_fix: str
    bad_request_fix: str | None = None


def status_class(status: int) -> tuple[str, bool] | None:
    """The reason code of an HTTP answer and whether a retry may help; None when it is no error.

    401 `auth`, 403 `forbidden`, 404 `not_found`, other 4xx `refused` (the request itself is
    wrong: sending it again cannot help), 5xx `server_error` (retryable).
    """
    if status < 400:
        return None
    if status >= 500:
        return ("server_error", True)
    return {401: ("auth", False), 403: ("forbidden", False), 404: ("not_found", False)}.get(
        status, ("refused", False)
    )


def _said(reply: Reply) -> str:
    """`: TEXT` for what the server said, unless it said nothing or an HTML page (IIS)."""
    text = reply.text()
    if not text or reply.content_type == "text/html":
        return ""
    return f": {text}"


def _asks_for(reply: Reply) -> str:
    """`; it asks for SCHEME, ...` from WWW-Authenticate (scheme names only, never tokens)."""
    schemes = [h.split(" ", 1)[0] for h in reply.headers.getall("WWW-Authenticate", [])]
    return f"; it asks for {', '.join(schemes)}" if schemes else ""


def raise_for_status(
    owner: ConnectorBase, step: str, url: str, reply: Reply, words: StatusWords
) -> Reply:
    """`reply` when its status is no error; otherwise the CARequestError of `status_class`."""
    found = status_class(reply.status)
    if found is None:
        return reply
    reason, retryable = found
    status = reply.status
    if reason == "auth":
        problem = f"{words.server} refused {words.auth} (HTTP 401{_asks_for(reply)})"
        fix = words.auth_fix
    elif reason == "forbidden":
        problem, fix = f"{words.server} denied access (HTTP 403)", words.forbidden_fix
    elif reason == "not_found":
        problem, fix = f"{url} does not exist (HTTP 404)", words.not_found_fix
    elif reason == "server_error":
        problem = f"{words.server} failed (HTTP {status}{_said(reply)})"
        fix = words.server_error_fix
    else:
        problem = f"{words.server} refused the request (HTTP {status}{_said(reply)})"
        fix = (
            words.bad_request_fix if status == 400 and words.bad_request_fix else words.refused_fix
        )
    raise owner.error(step, problem, fix, reason=reason, retryable=retryable)


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
