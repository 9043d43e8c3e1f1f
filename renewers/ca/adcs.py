"""Microsoft AD CS connector: certsrv web enrollment (certfnsh.asp, certnew.cer, certcarc.asp,
certnew.p7b) with Basic, NTLM or Kerberos (Negotiate) auth through pyspnego.

"Certificate Pending" (CA manager approval) becomes Pending with the request id in the handle;
`poll` fetches certnew.cer for that id and never submits again. certsrv pages are localised
(a Korean, German, Japanese or Chinese Windows Server answers in its language), so
`read_certsrv_page` reads outcomes only from what the translation leaves alone: the element
IDs of Microsoft's certsrv pages (locDenied, locInfoNewReq, locDispLabel, ...), the
certnew.cer?ReqID= link, the `nReqId = N` script and hidden ReqID field, disposition codes and
HRESULTs; English sentences are a last resort for pages that carry none of them. NTLM and Negotiate authenticate
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
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from expressway_certd.monitor.facts import EKU_CONFIG_NAMES, pkcs7_certificates
from expressway_certd.renewers.ca.adcs_config import ADCSConfig
from expressway_certd.renewers.ca.base import (
    CACapabilities,
    CARequestError,
    CheckResult,
    ConnectorBase,
    Issued,
    Pending,
    RenewalWindow,
    client_ssl_context,
    csr_der,
    csr_pem,
    load_pem_certs,
    order_chain,
    retry_at,
)
from expressway_certd.renewers.ca.httpclient import (
    BROWSER_USER_AGENT,
    Reply,
    StatusWords,
    basic_auth,
    raise_for_status,
    send,
)

PENDING_POLL = timedelta(minutes=5)
_ISSUED = re.compile(r"certnew\.cer\?ReqID=(\d{1,10})&")
_REQ_ID = (
    re.compile(r"\bnReqId\s*=\s*(\d{1,10})(?!\d)"),  # certrspn.asp postLoad script
    re.compile(
        r"Name\s*=\s*\"?ReqID\"?\s+Value\s*=\s*\"?(\d{1,10})(?!\d)", re.I
    ),  # hidden form field
)
_HRESULT = re.compile(r"\b0x(8[0-9a-f]{7})\b", re.I)
_QUOTED = re.compile(  # "...", „...“, “...”, 「...」
    r'"([^"]*)"|\u201e([^\u201c\u201d]*)[\u201c\u201d]'
    r"|\u201c([^\u201d]*)\u201d|\u300c([^\u300d]*)\u300d"
)
_TAG = re.compile(r"<[^>]*>")
# English wording, only for pages without the IDs above (customised certsrv sites).
_PENDING_EN = re.compile(r"Your Request Id is (\d{1,10})\.")
_DISPOSITION_EN = re.compile(r'The disposition message is "([^"]*)', re.S)
_RENEWALS = re.compile(r"var nRenewals=(\d+);")
_TITLE_START = re.compile(r"ID=locPageTitle>", re.I)
_TITLE_END = re.compile(r"</P>|<P\b|<!--|<Table", re.I)
_TITLE_TAG = re.compile(r"<Title>([^<]*)</Title>", re.I)
_ELEMENT_END = re.compile(r"</P>|<P\b|</LocID>|</DD>|</TD>|</DT>", re.I)
_DT_END = re.compile(r"</DT>\s*<DD>", re.I)
# HTML lets </DD> be left out: a definition also ends at the next DT/DD, the list's end or the
# page's end (pages of a French Windows Server quoted in a public test suite end so).
_DD_END = re.compile(r"</DD>|<D[TD]\b|</DL>|\Z", re.I)
# AD CS request ids are DWORDs: 10 digits at most. Longer digit runs are not ids (and int()
# refuses more than 4,300 digits).

# certcli.h dispositions, as certrser.asp prints them (hex) under locDispLabel.
CR_DISP_DENIED, CR_DISP_ISSUED, CR_DISP_ISSUED_OUT_OF_BAND = 2, 3, 4
CR_DISP_UNDER_SUBMISSION, CR_DISP_REVOKED = 5, 6
# winerror.h HRESULTs a certsrv page may carry, and what to do about each.
HRESULT_FIXES = {
    0x80094800: "CERTSRV_E_UNSUPPORTED_CERT_TYPE: the template is not published on this CA",
    0x80094012: "CERTSRV_E_TEMPLATE_DENIED: the account may not enroll on this template",
    0x80094811: "CERTSRV_E_KEY_LENGTH: the key is shorter than the template's minimum",
    0x80094004: "CERTSRV_E_PROPERTY_EMPTY: the CA has no such request",
    0x80092004: "CRYPT_E_NOT_FOUND: the CA has no such request",
    0x8009310B: "CRYPT_E_ASN1_BADTAG: the CA could not parse the CSR",
    0x80070057: "E_INVALIDARG: the form was incomplete",
}
NOT_FOUND_HRESULTS = (0x80092004, 0x80094004)


@dataclass(frozen=True)
class CertsrvPage:
    """What a certsrv answer page says, read without relying on its language."""

    outcome: str  # issued | pending | denied | error | unknown
    req_id: int | None = None
    message: str = ""  # the CA's disposition message, in the CA's language
    hresult: int | None = None
    title: str = ""

    def describe(self) -> str:
        parts = [self.message or self.title or "no message"]
        if self.hresult is not None and f"{self.hresult:08x}" not in self.message.lower():
            parts.append(f"0x{self.hresult:08x}")
        if self.hresult in HRESULT_FIXES:
            parts.append(f"({HRESULT_FIXES[self.hresult]})")
        return " ".join(parts)


def _text(fragment: str) -> str:
    return " ".join(html.unescape(_TAG.sub(" ", fragment)).split())


def _has_id(page: str, *ids: str) -> bool:
    return any(re.search(rf"\bID\s*=\s*\"?{i}\b", page, re.I) for i in ids)


def _between(page: str, start: re.Pattern[str], *ends: re.Pattern[str]) -> str | None:
    """The text after the first match of `start` up to `ends` in turn (each searched after the
    previous one), or None. One pass over the page: a hostile page with thousands of unclosed
    IDs costs linear time, where a lazy `ID=x(.*?)END` regex retried at every ID is quadratic."""
    match = start.search(page)
    if match is None:
        return None
    begin = end = match.end()
    for pattern in ends:
        found = pattern.search(page, end)
        if found is None:
            return None
        begin, end = (
            (found.end(), found.end()) if pattern is not ends[-1] else (begin, found.start())
        )
    return page[begin:end]


def _element(page: str, element_id: str) -> str | None:
    """The text of the element with this ID (a P, LocID, TD or DD), tags removed."""
    start = re.compile(rf"\bID\s*=\s*\"?{element_id}\b\"?[^>]{{0,200}}>", re.I)
    found = _between(page, start, _ELEMENT_END)
    return None if found is None else _text(found)


def _definition(page: str, label_id: str) -> str | None:
    """certrser.asp's <DT ID=label>...</DT><DD>value</DD>: the value."""
    start = re.compile(rf"\bID\s*=\s*\"?{label_id}\b", re.I)
    found = _between(page, start, _DT_END, _DD_END)
    return None if found is None else _text(found)


def _unquote(text: str) -> str:
    """The message inside the sentence that quotes it ("...", „...“, “...”, 「...」)."""
    match = _QUOTED.search(text)
    if match is None:
        return text
    return next(g for g in match.groups() if g is not None).strip()


def _hresult(*texts: str | None) -> int | None:
    for text in texts:
        if text and (match := _HRESULT.search(text)):
            return int(match.group(1), 16)
    return None


def read_certsrv_page(page: str) -> CertsrvPage:
    """Read the outcome of certfnsh.asp or certnew.cer from IDs, links, codes (any language)."""
    found = _between(page, _TITLE_START, _TITLE_END)
    if found is None and (tag := _TITLE_TAG.search(page)):
        found = tag.group(1)
    title = _text(found or "")
    if match := _ISSUED.search(page):
        return CertsrvPage("issued", int(match.group(1)), title=title)
    req_id = next((int(m.group(1)) for r in _REQ_ID if (m := r.search(page))), None)
    if req_id is None:
        # certrspn.asp's request-id paragraph: locInfoReqID (Server 2008 R2 and later, the
        # only place the id is when the browser is not Internet Explorer), locReqId... else.
        found = _element(page, r"loc(?:Info)?ReqId\w*")
        if found and (digits := re.search(r"(?<!\d)\d{1,10}(?!\d)", found)):
            req_id = int(digits.group(0))
    if _has_id(page, "locDenied", "locIssRev"):
        sentence = _element(page, "locDispMsg") or _element(page, "locErrorMsg")
        if sentence is None:
            # The message's element ID is not known for every Windows version (the 2003
            # certrsdn.asp shows none; later ones quote it): the first quoted text after the
            # denial, tags removed (so no attribute value), if any.
            after = re.search(r"\bID\s*=\s*\"?loc(?:Denied|IssRev)\b", page, re.I)
            rest = _text(page[after.end() :]) if after else ""
            quoted = _QUOTED.search(rest)
            sentence = next(g for g in quoted.groups() if g is not None) if quoted else ""
        message = _unquote(sentence)
        return CertsrvPage("denied", req_id, message, _hresult(message, page), title)
    if _has_id(page, "locInfoNewReq", "locInfoChkPnd", "locInfoReqID"):
        return CertsrvPage("pending", req_id, title=title)
    disposition_text = _definition(page, "locDispLabel")
    message = _definition(page, "locDispMsgLabel") or ""
    result = _definition(page, "locResultLabel")
    hresult = _hresult(message, result)
    disposition = None
    if disposition_text and (code := re.match(r"([0-9a-f]+)\b", disposition_text, re.I)):
        disposition = int(code.group(1), 16)
    if disposition == CR_DISP_UNDER_SUBMISSION:
        return CertsrvPage("pending", req_id, message, hresult, title)
    if disposition in (CR_DISP_DENIED, CR_DISP_REVOKED):
        return CertsrvPage("denied", req_id, message, hresult, title)
    if disposition is not None or _has_id(page, "locReqFailed", "locChkPndFailed"):
        return CertsrvPage("error", req_id, message, hresult, title)
    if match := _PENDING_EN.search(page):
        return CertsrvPage("pending", int(match.group(1)), title=title)
    if match := _DISPOSITION_EN.search(page):
        message = _text(match.group(1))
        return CertsrvPage("denied", req_id, message, _hresult(message), title)
    return CertsrvPage("unknown", req_id, "", _hresult(page), title)


_NTLM_HELP = (
    "check username (DOMAIN\\user or user@domain) and password and that the account may enroll "
    "on this template; NTLM needs MD4, which OpenSSL 3 only has in its legacy provider: this "
    "connector carries its own (pyspnego), other clients on this host may not; if IIS "
    "Extended Protection is 'Required', a TLS-terminating proxy or load balancer in front of "
    "IIS breaks the channel binding: connect to IIS directly or set it to 'Accept'"
)


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
            tls_fix="check the url points at IIS's HTTPS port; this connector sends no client "
            "certificate, so IIS SSL settings for certsrv must not require one",
            headers=headers,
            **kw,
        )

    async def _request(self, step: str, method: str, path: str, **kw: Any) -> Reply:
        with self.measure(step):
            reply = await self._send(step, method, path, {}, **kw)
            if reply.status == 401 and self.config.auth in ("ntlm", "kerberos"):
                reply = await self._handshake(step, method, path, reply, **kw)
            return raise_for_status(self, step, f"{self._url}/{path}", reply, self._words())

    def _words(self) -> StatusWords:
        if self.config.auth == "ntlm":
            auth_fix = _NTLM_HELP
        elif self.config.auth == "basic":
            auth_fix = "check username and password"
        else:
            auth_fix = (
                "check the service has a Kerberos ticket (kinit or keytab) and the "
                f"server has an HTTP/{self._host} SPN"
            )
        return StatusWords(
            server="the server",
            auth=f"{self.config.auth} authentication",
            auth_fix=auth_fix,
            forbidden_fix="give the account Read and Enroll on the template and access to "
            "certsrv; IIS may also require a client certificate (SSL settings)",
            not_found_fix="check the url ends in /certsrv and web enrollment is installed",
            server_error_fix="the request is retried later; check the CA service and IIS logs",
            refused_fix="check the url",
        )

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
        import spnego.channel_bindings  # noqa: PLC0415 - as above

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
        return self.outcome("submit", await self._submit(csr), csr)

    def _handle(self, req_id: int, csr: x509.CertificateSigningRequest | None) -> dict[str, Any]:
        # The CSR (public) rides along so a later poll can check the key and what was dropped.
        extra = {"csr": base64.b64encode(csr_der(csr)).decode()} if csr is not None else {}
        return self.new_handle(req_id=req_id, template=self.config.template, **extra)

    def _denied(self, step: str, answer: CertsrvPage) -> CARequestError:
        fix = "ask the CA administrator; the disposition message says why"
        if answer.hresult in (0x80094800, 0x80094012):
            fix = (
                f"check the template name {self.config.template!r} (the template's name, not "
                "its display name) is published on this CA and the account may enroll"
            )
        what = f"request {answer.req_id}" if answer.req_id is not None else "the request"
        return self.error(step, f"the CA denied {what}: {answer.describe()}", fix, reason="denied")

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
        answer = read_certsrv_page(reply.body.decode("utf-8", "replace"))
        if answer.outcome == "issued" and answer.req_id is not None:
            return await self._fetch(answer.req_id, csr)
        if answer.outcome == "pending" and answer.req_id is not None:
            return Pending(
                self._handle(answer.req_id, csr),
                retry_at(PENDING_POLL.total_seconds()),
                f"request {answer.req_id}: waiting for a CA manager to issue",
            )
        if answer.outcome == "denied":
            raise self._denied("submit", answer)
        if answer.outcome == "error":
            raise self.error(
                "submit",
                f"the CA could not process the request: {answer.describe()}",
                "check the CSR and the template; the CA's message says what failed",
                reason="refused",
            )
        raise self.error(
            "submit",
            f"unexpected answer page {answer.title or 'without a title'!r}"
            + (" (pending, but without a request id)" if answer.outcome == "pending" else ""),
            "check the url points at certsrv web enrollment",
            reason="bad_response",
        )

    async def poll(self, handle: Mapping[str, Any]) -> Issued | Pending:
        self.check_handle(handle, "req_id")
        csr = None
        if isinstance(handle.get("csr"), str):
            try:
                csr = x509.load_der_x509_csr(base64.b64decode(handle["csr"]))
            except ValueError:
                csr = None
        result = await self._fetch(int(handle["req_id"]), csr, dict(handle))
        return self.outcome("poll", result, csr)

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
            if csr is not None:
                leaf = self.leaf_for(
                    "retrieve",
                    certs,
                    csr,
                    f"tell the CA administrator request {req_id} certified another key; "
                    "submit the CSR again",
                )
            chain = await self.ca_chain()
            return Issued(leaf, order_chain(leaf, list(chain)))
        page = reply.body.decode("utf-8", "replace")
        if "-----BEGIN CERTIFICATE-----" in page:
            raise self.error(
                "retrieve",
                f"request {req_id}: the server sent the certificate as {reply.content_type!r}",
                "the server wants a browser-like User-Agent; a proxy may be rewriting it",
                reason="bad_response",
            )
        answer = read_certsrv_page(page)
        if answer.hresult in NOT_FOUND_HRESULTS:
            raise self.error(
                "retrieve",
                f"request {req_id} is not in the CA database ({answer.describe()})",
                "submit the CSR again",
                reason="not_found",
            )
        if answer.outcome == "pending":
            return Pending(
                handle or self._handle(req_id, csr),
                retry_at(PENDING_POLL.total_seconds()),
                f"request {req_id}: {answer.message or 'pending'}",
            )
        if answer.outcome == "denied":
            raise self.error(
                "retrieve",
                f"request {req_id} was not issued: {answer.describe()}",
                "ask the CA administrator; submit a new CSR once fixed",
                reason="denied",
            )
        raise self.error(
            "retrieve",
            f"request {req_id}: unexpected answer ({answer.outcome}: {answer.describe()})",
            "check the url points at certsrv web enrollment; tell the CA administrator",
            reason="bad_response",
        )

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
            certs = pkcs7_certificates(reply.body)
        except ValueError:
            try:
                certs = pkcs7_certificates(base64.b64decode(b"".join(reply.body.split())))
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

    def capabilities(self) -> CACapabilities:
        ekus = None
        if self.config.ekus is not None:
            ekus = frozenset(EKU_CONFIG_NAMES[e] for e in self.config.ekus)
        return CACapabilities(
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
