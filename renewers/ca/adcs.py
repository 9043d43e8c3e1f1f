"""Microsoft AD CS connector: certsrv web enrollment (certfnsh.asp, certnew.cer, certcarc.asp,
certnew.p7b) with Basic, NTLM or Kerberos (Negotiate) auth through pyspnego.

"Certificate Pending" (CA manager approval) becomes Pending with the request id in the handle;
`poll` fetches certnew.cer for that id and never submits again. NTLM and Negotiate authenticate
the TCP connection (IIS), so each connector keeps one connection and sends the channel binding
of the server's certificate, which IIS Extended Protection = Required demands.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import pkcs7

from monitor.config_ca import ADCSConfig
from renewers.ca.base import (
    EKU_NAMES,
    Capabilities,
    CheckResult,
    ConnectorBase,
    Issued,
    Pending,
    RenewalWindow,
    client_ssl_context,
    csr_pem,
    load_pem_certs,
    order_chain,
    retry_at,
)
from renewers.ca.httpclient import BROWSER_USER_AGENT, Reply, basic_auth, send

PENDING_POLL = timedelta(minutes=5)
_ISSUED = re.compile(r"certnew\.cer\?ReqID=(\d+)&")
_PENDING = re.compile(r"Your Request Id is (\d+)\.")
_DISPOSITION = re.compile(r'The disposition message is "([^"]*)', re.S)
_RETRIEVED = re.compile(r"Disposition message:\s*(?:</B>)?\s*(?:</TD>)?\s*(?:<TD>)?([^<]*)", re.I)
_RENEWALS = re.compile(r"var nRenewals=(\d+);")
_TITLE = re.compile(r"<P ID=locPageTitle>.*?<B>([^<]*)</B>|<Title>([^<]*)</Title>", re.I | re.S)
_NTLM_HELP = (
    "check username (DOMAIN\\user or user@domain) and password and that the account may enroll "
    "on this template; NTLM needs MD4, which OpenSSL 3 only has in its legacy provider: this "
    "connector carries its own (pyspnego), other clients on this host may not; if IIS "
    "Extended Protection is 'Required', a TLS-terminating proxy or load balancer in front of "
    "IIS breaks the channel binding: connect to IIS directly or set it to 'Accept'"
)


def _one_line(text: str) -> str:
    return " ".join(html.unescape(text).split())


def channel_binding_token(server_cert_der: bytes) -> bytes:
    """RFC 5929 tls-server-end-point: hash of the server certificate (SHA-256 for MD5/SHA-1)."""
    cert = x509.load_der_x509_certificate(server_cert_der)
    algorithm = cert.signature_hash_algorithm
    if algorithm is None or isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(server_cert_der)
    return b"tls-server-end-point:" + digest.finalize()


class ADCSConnector(ConnectorBase):
    """An AD CS enterprise CA reached through its certsrv web enrollment pages."""

    def __init__(self, config: ADCSConfig, *, data_dir: Path | None = None) -> None:
        super().__init__(config.name, "adcs")
        del data_dir
        self.config = config
        self._url = config.url.rstrip("/")
        parts = urlsplit(self._url)
        if parts.scheme != "https" or not parts.hostname or not parts.path.endswith("/certsrv"):
            raise self.error(
                "config",
                f"url {config.url!r} is not a certsrv URL",
                "use https://CA-SERVER/certsrv (web enrollment over HTTPS)",
                reason="config",
            )
        self._host = parts.hostname
        if config.auth in ("basic", "ntlm") and (
            config.username is None or config.password is None
        ):
            raise self.error(
                "config",
                f"auth {config.auth!r} needs username and password",
                "set both",
                reason="config",
            )
        try:
            self._ssl = client_ssl_context(config.trust_anchor)
        except (OSError, ValueError) as exc:
            raise self.error(
                "config",
                f"cannot load trust_anchor ({exc})",
                "give the PEM of the CA that signed the IIS server certificate",
                reason="config",
            ) from None
        self._session: aiohttp.ClientSession | None = None
        self._peer_cert: bytes | None = None

    def __repr__(self) -> str:
        return f"ADCSConnector(name={self.name!r}, url={self._url!r}, auth={self.config.auth!r})"

    # --- transport -----------------------------------------------------------
    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"User-Agent": BROWSER_USER_AGENT}
            if self.config.auth == "basic":
                assert self.config.username is not None and self.config.password is not None
                headers["Authorization"] = basic_auth(
                    self.config.username, self.config.password.reveal()
                )
            self._session = aiohttp.ClientSession(
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout.total_seconds()),
                # One connection: NTLM/Negotiate authenticate it, not each request.
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=1),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _send(
        self, step: str, method: str, path: str, headers: dict[str, str], **kw: Any
    ) -> Reply:
        return await send(
            self,
            self._client(),
            step,
            method,
            f"{self._url}/{path}",
            trust_fix="set trust_anchor to the PEM of the CA that signed the IIS server certificate",
            headers=headers,
            **kw,
        )

    async def _request(self, step: str, method: str, path: str, **kw: Any) -> Reply:
        with self.measure(step):
            reply = await self._send(step, method, path, {}, **kw)
            if reply.status == 401 and self.config.auth in ("ntlm", "kerberos"):
                reply = await self._handshake(step, method, path, reply, **kw)
            if reply.status == 401:
                offered = ", ".join(reply.headers.getall("WWW-Authenticate", [])) or "none"
                help_ = (
                    _NTLM_HELP
                    if self.config.auth == "ntlm"
                    else (
                        "check username and password"
                        if self.config.auth == "basic"
                        else "check the service has a Kerberos ticket (kinit or keytab) and the "
                        f"server has an HTTP/{self._host} SPN"
                    )
                )
                raise self.error(
                    step,
                    f"the server refused {self.config.auth} authentication (HTTP 401; it offers: {offered})",
                    help_,
                    reason="auth",
                )
            if reply.status == 403:
                raise self.error(
                    step,
                    "access denied (HTTP 403)",
                    "give the account Read and Enroll on the template and access to certsrv; "
                    "IIS may also require a client certificate (SSL settings)",
                    reason="forbidden",
                )
            if reply.status == 404:
                raise self.error(
                    step,
                    f"{self._url}/{path} does not exist (HTTP 404)",
                    "check the url ends in /certsrv and web enrollment is installed",
                    reason="not_found",
                )
            if reply.status >= 500:
                raise self.error(
                    step,
                    f"the server failed (HTTP {reply.status})",
                    "the request is retried later; check the CA service and IIS logs",
                    reason="server_error",
                    retryable=True,
                )
            if reply.status >= 400:
                raise self.error(
                    step, f"HTTP {reply.status}: {reply.text()}", "check the url", reason="refused"
                )
            return reply

    async def _server_cert(self, step: str) -> bytes:
        """The DER of the server's TLS certificate, for the channel binding (verified handshake)."""
        if self._peer_cert is None:
            parts = urlsplit(self._url)
            try:
                async with asyncio.timeout(self.config.timeout.total_seconds()):
                    _, writer = await asyncio.open_connection(
                        parts.hostname, parts.port or 443, ssl=self._ssl
                    )
            except (OSError, TimeoutError) as exc:
                raise self.error(
                    step,
                    f"TLS connection to {self._host} failed ({exc})",
                    "check the url and trust_anchor",
                    reason="tls",
                ) from None
            ssl_object = writer.get_extra_info("ssl_object")
            self._peer_cert = ssl_object.getpeercert(binary_form=True) if ssl_object else b""
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return self._peer_cert or b""

    async def _handshake(self, step: str, method: str, path: str, first: Reply, **kw: Any) -> Reply:
        """NTLM or Negotiate over the kept connection: token, challenge, answer."""
        import spnego  # noqa: PLC0415 - only NTLM/Kerberos sites need it
        import spnego.channel_bindings  # noqa: PLC0415

        scheme = "NTLM" if self.config.auth == "ntlm" else "Negotiate"
        offered = [h.split(" ")[0].lower() for h in first.headers.getall("WWW-Authenticate", [])]
        if scheme.lower() not in offered:
            raise self.error(
                step,
                f"the server does not offer {scheme} (it offers: {', '.join(offered) or 'nothing'})",
                "set auth to one the IIS site enables (Windows Authentication providers)",
                reason="auth",
            )
        server_cert = await self._server_cert(step)
        bindings = None
        if server_cert:
            bindings = spnego.channel_bindings.GssChannelBindings(
                application_data=channel_binding_token(server_cert)
            )
        password = self.config.password.reveal() if self.config.password else None
        try:
            ctx = spnego.client(
                self.config.username,
                password,
                hostname=self._host,
                service="HTTP",
                channel_bindings=bindings,
                protocol="ntlm" if scheme == "NTLM" else "kerberos",
            )
            token = ctx.step()
        except Exception as exc:  # each backend (NTLM, gssapi, krb5) raises its own types
            raise self.error(
                step,
                f"cannot start {scheme} ({exc})",
                _NTLM_HELP
                if scheme == "NTLM"
                else (
                    "check username (user@REALM) and password, or give the service a ticket "
                    "(kinit, or a keytab in KRB5_CLIENT_KTNAME); krb5.conf must name the realm's "
                    "KDC; Kerberos needs the Python packages gssapi and krb5"
                ),
                reason="auth",
            ) from None
        reply = first
        for _ in range(3):
            headers = {"Authorization": f"{scheme} {base64.b64encode(token or b'').decode()}"}
            reply = await self._send(step, method, path, headers, **kw)
            if reply.status != 401:
                return reply
            challenge = next(
                (
                    h.split(" ", 1)[1]
                    for h in reply.headers.getall("WWW-Authenticate", [])
                    if h.lower().startswith(scheme.lower() + " ")
                ),
                None,
            )
            if challenge is None or ctx.complete:
                return reply
            try:
                token = ctx.step(base64.b64decode(challenge))
            except Exception as exc:  # as above
                raise self.error(
                    step, f"{scheme} handshake failed ({exc})", _NTLM_HELP, reason="auth"
                ) from None
        return reply

    # --- protocol ------------------------------------------------------------
    async def submit(self, csr: x509.CertificateSigningRequest) -> Issued | Pending:
        return self.outcome("submit", await self._submit(csr))

    async def _submit(self, csr: x509.CertificateSigningRequest) -> Issued | Pending:
        form = {
            "Mode": "newreq",
            "CertRequest": csr_pem(csr).decode(),
            "CertAttrib": f"CertificateTemplate:{self.config.template}\r\n",
            "FriendlyType": "Saved-Request Certificate",
            "TargetStoreFlags": "0",
            "SaveCert": "yes",
        }
        reply = await self._request("submit", "POST", "certfnsh.asp", data=form)
        page = reply.body.decode("utf-8", "replace")
        if match := _ISSUED.search(page):
            return await self._fetch(int(match.group(1)), csr)
        if match := _PENDING.search(page):
            handle = self.new_handle(req_id=int(match.group(1)), template=self.config.template)
            return Pending(
                handle, retry_at(PENDING_POLL.total_seconds()), "waiting for a CA manager to issue"
            )
        if match := _DISPOSITION.search(page):
            message = _one_line(match.group(1))
            fix = "ask the CA administrator; the disposition message says why"
            if "template" in message.lower():
                fix = (
                    f"check the template name {self.config.template!r} (the template's name, not "
                    "its display name) is published on this CA and the account may enroll"
                )
            raise self.error(
                "submit", f"the CA denied the request: {message}", fix, reason="denied"
            )
        raise self.error(
            "submit",
            f"unexpected answer page {self._title(page)!r}",
            "check the url points at certsrv web enrollment",
            reason="bad_response",
        )

    async def poll(self, handle: Mapping[str, Any]) -> Issued | Pending:
        self.check_handle(handle, "req_id")
        return self.outcome("poll", await self._fetch(int(handle["req_id"]), None, dict(handle)))

    async def _fetch(
        self,
        req_id: int,
        csr: x509.CertificateSigningRequest | None,
        handle: dict[str, Any] | None = None,
    ) -> Issued | Pending:
        reply = await self._request(
            "retrieve", "GET", "certnew.cer", params={"ReqID": str(req_id), "Enc": "b64"}
        )
        if reply.content_type in ("application/pkix-cert", "application/x-x509-ca-cert"):
            certs = load_pem_certs(reply.body)
            if not certs:
                try:
                    certs = [x509.load_der_x509_certificate(reply.body)]
                except ValueError:
                    certs = []
            if not certs:
                raise self.error(
                    "retrieve",
                    f"request {req_id}: the answer holds no certificate",
                    "tell the CA administrator",
                    reason="bad_response",
                )
            leaf = certs[0]
            if csr is not None and leaf.public_key() != csr.public_key():
                raise self.error(
                    "retrieve",
                    f"request {req_id} returned a certificate for another key",
                    "submit the CSR again",
                    reason="bad_response",
                )
            chain = await self.ca_chain()
            return Issued(leaf, order_chain(leaf, list(chain)))
        page = reply.body.decode("utf-8", "replace")
        found = _RETRIEVED.search(page) or _DISPOSITION.search(page)
        message = _one_line(found.group(1)) if found else ""
        if "-----BEGIN CERTIFICATE-----" in page:
            raise self.error(
                "retrieve",
                f"request {req_id}: the server sent the certificate as {reply.content_type!r}",
                "the server wants a browser-like User-Agent; a proxy may be rewriting it",
                reason="bad_response",
            )
        if "CRYPT_E_NOT_FOUND" in message or "Cannot find" in message:
            raise self.error(
                "retrieve",
                f"request {req_id} is not in the CA database ({message})",
                "submit the CSR again",
                reason="not_found",
            )
        if "Taken Under Submission" in message or (not message and "pending" in page.lower()):
            handle = handle or self.new_handle(req_id=req_id, template=self.config.template)
            return Pending(
                handle,
                retry_at(PENDING_POLL.total_seconds()),
                f"request {req_id}: {message or 'pending'}",
            )
        raise self.error(
            "retrieve",
            f"request {req_id} was not issued: {message or self._title(page)}",
            "ask the CA administrator; submit a new CSR once fixed",
            reason="denied",
        )

    @staticmethod
    def _title(page: str) -> str:
        match = _TITLE.search(page)
        return _one_line((match.group(1) or match.group(2)) if match else page[:80])

    async def ca_chain(self) -> tuple[x509.Certificate, ...]:
        page = (await self._request("cacerts", "GET", "certcarc.asp")).body.decode(
            "utf-8", "replace"
        )
        match = _RENEWALS.search(page)
        renewal = match.group(1) if match else "0"
        reply = await self._request(
            "cacerts",
            "GET",
            "certnew.p7b",
            params={"ReqID": "CACert", "Renewal": renewal, "Enc": "bin"},
        )
        try:
            certs = pkcs7.load_der_pkcs7_certificates(reply.body)
        except ValueError:
            try:
                certs = pkcs7.load_der_pkcs7_certificates(
                    base64.b64decode(b"".join(reply.body.split()))
                )
            except ValueError:
                raise self.error(
                    "cacerts",
                    "certnew.p7b is not a PKCS#7 bag",
                    "check the url",
                    reason="bad_response",
                ) from None
        leafless = [c for c in certs if c.subject != c.issuer]
        top = leafless[0] if leafless else certs[0]
        issuing = next(
            (c for c in certs if not any(o.issuer == c.subject and o is not c for o in certs)), top
        )
        return (issuing, *order_chain(issuing, certs))

    def capabilities(self) -> Capabilities:
        ekus = None
        if self.config.ekus is not None:
            ekus = frozenset(EKU_NAMES[e] for e in self.config.ekus)
        return Capabilities(
            "adcs",
            self.config.template,
            ekus,
            ""
            if ekus
            else f"EKUs are set by template {self.config.template!r}; set ekus to declare them",
        )

    async def renewal_window(self, leaf: x509.Certificate) -> RenewalWindow | None:
        return None

    async def check(self) -> list[CheckResult]:
        reply = await self._request("auth", "GET", "")
        results = [CheckResult("auth", True, f"{self.config.auth} accepted (HTTP {reply.status})")]
        chain = await self.ca_chain()
        names = ", ".join(c.subject.rfc4514_string() for c in chain)
        results.append(CheckResult("cacerts", True, f"{len(chain)} CA certificate(s): {names}"))
        return results
