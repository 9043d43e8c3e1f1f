"""A lab Microsoft AD CS web enrollment (certsrv) server over real HTTPS on loopback.

Answers certfnsh.asp, certnew.cer, certcarc.asp and certnew.p7b with HTML shaped like the real
IIS pages; templates "WebServer" (Server Authentication only, like the stock template) and
"CollabServerClient" (Server + Client Authentication, what Cisco collaboration sites use);
manager approval ("Certificate Pending" until `issue(req_id)`), denial with a disposition
message; Basic and NTLM (pyspnego acceptor, connection-based like IIS), optionally Extended
Protection (channel binding required) and Negotiate/Kerberos with a keytab.
Imports nothing from monitor/, renewers/ or alerts/.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import hashlib
import itertools
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import spnego
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from multidict import CIMultiDict

from lab.est import ThreadedHTTPS, lab_server_context
from lab.pki import CA, CLIENT_AUTH, SERVER_AUTH, cert_pem

# The authenticated user of the request being handled (set by the auth middleware).
USER: contextvars.ContextVar[str] = contextvars.ContextVar("user", default="")
TEMPLATES: dict[str, list[x509.ObjectIdentifier]] = {
    "WebServer": [SERVER_AUTH],
    "CollabServerClient": [SERVER_AUTH, CLIENT_AUTH],
}

_PAGE = """<HTML><Head>
<Meta HTTP-Equiv="Content-Type" Content="text/html; charset=UTF-8">
<Title>Microsoft Active Directory Certificate Services</Title>
</Head><Body BgColor=#FFFFFF>
<Table Border=0 CellSpacing=0 CellPadding=4 Width=100% BgColor=#008080>
<TR><TD><Font Color=#FFFFFF><LocID ID=locMSCertSrv><Font Face="Arial" Size=-1><B><I>Microsoft</I></B>
Active Directory Certificate Services</Font></LocID> &nbsp;--&nbsp; {ca_name}&nbsp;</Font></TD></TR>
</Table>
<P ID=locPageTitle><Font Color=#336699><B>{title}</B></Font></P>
{body}
</Body></HTML>
"""

_ISSUED = """<P ID=locInfo>The certificate you requested was issued to you.</P>
<Input Type=Radio ID=rbDerEnc Name=rbEncoding Checked>DER encoded or
<Input Type=Radio ID=rbB64Enc Name=rbEncoding>Base 64 encoded
<Table><TR><TD><LocID ID=locDownloadCert1><A Href="certnew.cer?ReqID={req_id}&amp;Enc=bin">Download certificate</A></LocID></TD></TR>
<TR><TD><LocID ID=locDownloadCert2><A Href="certnew.p7b?ReqID={req_id}&amp;Enc=bin">Download certificate chain</A></LocID></TD></TR></Table>
<Script Language="JavaScript">
    var sPKCS7="";
    function handleGetCert() {{ location="certnew.cer?ReqID={req_id}&"+getEncoding(); }}
</Script>"""

_PENDING = """<P ID=locInfo>Your certificate request has been received. However, you must wait
for an administrator to issue the certificate you requested.</P>
<P ID=locReqID>Your Request Id is {req_id}.</P>
<P ID=locRemind>Please return to this web site in a day or two to retrieve your certificate.</P>
<P ID=locNote><Font Size=-1><B>Note:</B> You must return with this web browser within 10 days
to retrieve your certificate</Font></P>"""

_DENIED = """<P ID=locInfo>Your certificate request was denied.</P>
<P ID=locContactAdmin>Contact your administrator for further information.</P>
<LocID ID=locErrorMsg>The disposition message is "{message}
"</LocID>"""

_ERROR = """<P ID=locInfo>An unexpected error has occurred:</P>
<LocID ID=locErrorMsg>The disposition message is "{message}
"</LocID>"""

_RETRIEVE = """<P ID=locInfo>{info}</P>
<Table><TR><TD><B>Request Id:</B></TD><TD>{req_id}</TD></TR>
<TR><TD><B>Disposition message:</B></TD><TD>{message}</TD></TR></Table>"""

_HOME = """<P ID=locWelcome>Use this Web site to request a certificate for your Web browser,
e-mail client, or other program.</P>
<LocID ID=locTasks><A Href="/certsrv/certrqus.asp">Request a certificate</A><BR>
<A Href="/certsrv/certckpn.asp">View the status of a pending certificate request</A><BR>
<A Href="/certsrv/certcarc.asp">Download a CA certificate, certificate chain, or CRL</A></LocID>"""

_CARC = """<Script Language="JavaScript">
var nRenewals={renewals};
var sCAName="{ca_name}";
</Script>
<P ID=locInfo>To trust certificates issued from this certification authority,
install this CA certificate.</P>"""


@dataclass
class CertRequest:
    """One request in the CA database."""

    req_id: int
    csr: x509.CertificateSigningRequest
    template: str
    requester: str
    status: str = "pending"  # pending | issued | denied
    message: str = "Taken Under Submission"
    cert: x509.Certificate | None = None


@dataclass
class ADCSSimulator:
    """The certsrv site. `users` are `DOMAIN\\user` (or UPN) -> password."""

    users: dict[str, str] = field(default_factory=lambda: {"CORP\\certd": "Adcs-Secret1"})
    auth: tuple[str, ...] = ("basic", "ntlm")  # basic, ntlm, negotiate
    manager_approval: bool = False
    extended_protection: bool = False  # require an NTLM channel binding (IIS "Required")
    require_browser_agent: bool = True  # answer text/html to script-like User-Agents
    keytab: Path | None = None  # for negotiate (Kerberos); also sets KRB5_KTNAME
    hostname: str = "adcs.lab.test"
    ca_name: str = "corp-LAB-CA"
    deny_templates: dict[str, str] = field(default_factory=dict)
    requests: dict[int, CertRequest] = field(default_factory=dict)
    principals: list[str] = field(default_factory=list)
    auth_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = CA.create("Lab AD CS Root CA")
        self.issuing = CA.create(self.ca_name, parent=self.root)
        self._tmp = tempfile.TemporaryDirectory(prefix="lab-adcs-")
        self.directory = Path(self._tmp.name)
        self.trust_anchor = self.root.write_bundle(self.directory / "adcs-root.pem")
        self._ids = itertools.count(2)
        self._contexts: dict[object, Any] = {}
        self._authed: dict[object, str] = {}
        self._server: ThreadedHTTPS | None = None
        self._server_cert_der = b""

    # --- operator side -------------------------------------------------------
    @property
    def submissions(self) -> int:
        return len(self.requests)

    def issue(self, req_id: int | None = None) -> None:
        """Approve pending requests as a CA manager would (all when `req_id` is None)."""
        for req in self.requests.values():
            if req.status == "pending" and req_id in (None, req.req_id):
                self._sign(req)

    def deny(self, req_id: int, message: str = "Denied by Policy Module") -> None:
        req = self.requests[req_id]
        req.status, req.message = "denied", message

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.port}/certsrv"

    def start(self) -> ADCSSimulator:
        if "ntlm" in self.auth or "negotiate" in self.auth:
            user_file = self.directory / "ntlm-users"
            user_file.write_text("".join(self._user_line(u, p) for u, p in self.users.items()))
            os.environ["NTLM_USER_FILE"] = str(user_file)
        if self.keytab is not None:
            os.environ["KRB5_KTNAME"] = str(self.keytab)
        app = web.Application(middlewares=[self._authenticate])
        app.router.add_get("/certsrv/", self._home)
        app.router.add_get("/certsrv", self._home)
        app.router.add_post("/certsrv/certfnsh.asp", self._certfnsh)
        app.router.add_get("/certsrv/certnew.cer", self._certnew_cer)
        app.router.add_get("/certsrv/certcarc.asp", self._certcarc)
        app.router.add_get("/certsrv/certnew.p7b", self._certnew_p7b)
        ctx = lab_server_context(self.root, self.hostname, self.directory)
        leaf = x509.load_pem_x509_certificates(
            (self.directory / f"{self.hostname}.pem").read_bytes()
        )[0]
        self._server_cert_der = leaf.public_bytes(serialization.Encoding.DER)
        self._server = ThreadedHTTPS(app, ctx).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._tmp.cleanup()

    def __enter__(self) -> ADCSSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()

    @staticmethod
    def _user_line(user: str, password: str) -> str:
        domain, sep, name = user.partition("\\")
        return f"{domain}:{name}:{password}\n" if sep else f":{user}:{password}\n"

    # --- authentication (IIS-like: NTLM/Negotiate authenticate the connection) -----
    def _challenge(self, token: str | None = None, scheme: str = "NTLM") -> web.HTTPUnauthorized:
        headers: CIMultiDict[str] = CIMultiDict()
        if token is not None:
            headers.add("WWW-Authenticate", f"{scheme} {token}")
        else:
            if "negotiate" in self.auth:
                headers.add("WWW-Authenticate", "Negotiate")
            if "ntlm" in self.auth:
                headers.add("WWW-Authenticate", "NTLM")
            if "basic" in self.auth:
                headers.add("WWW-Authenticate", f'Basic realm="{self.hostname}"')
        page = _PAGE.format(ca_name=self.ca_name, title="401 - Unauthorized", body="")
        return web.HTTPUnauthorized(headers=headers, text=page, content_type="text/html")

    def _channel_bindings(self) -> spnego.channel_bindings.GssChannelBindings | None:
        if not self.extended_protection:
            return None
        digest = hashlib.sha256(self._server_cert_der).digest()
        return spnego.channel_bindings.GssChannelBindings(
            application_data=b"tls-server-end-point:" + digest
        )

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        # Keyed by the connection object itself (held, so never reused): NTLM authenticates
        # a connection, not a request.
        conn = request.transport
        if conn in self._authed:
            USER.set(self._authed[conn])
            return await self._with_agent_quirk(request, handler)
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and "basic" in self.auth:
            user, _, password = base64.b64decode(value).decode("utf-8", "replace").partition(":")
            if not user or self.users.get(user) != password:
                raise self._challenge()
            USER.set(user)
            return await self._with_agent_quirk(request, handler)
        if scheme in ("ntlm", "negotiate") and scheme in self.auth:
            ctx = self._contexts.get(conn)
            if ctx is None:
                ctx = spnego.server(
                    hostname=self.hostname,
                    service="HTTP",
                    protocol=scheme,
                    channel_bindings=self._channel_bindings(),
                )
                self._contexts[conn] = ctx
            try:
                out = ctx.step(base64.b64decode(value))
            except Exception as exc:  # any failure of the handshake is a 401, as on IIS
                self.auth_errors.append(f"{type(exc).__name__}: {exc}")
                self._contexts.pop(conn, None)
                raise self._challenge() from exc
            if not ctx.complete:
                raise self._challenge(
                    base64.b64encode(out or b"").decode(),
                    scheme.upper() if scheme == "ntlm" else "Negotiate",
                )
            self._contexts.pop(conn, None)
            user = str(ctx.client_principal)
            self._authed[conn] = user
            self.principals.append(user)
            USER.set(user)
            return await self._with_agent_quirk(request, handler)
        raise self._challenge()

    async def _with_agent_quirk(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        agent = request.headers.get("User-Agent", "")
        if (
            self.require_browser_agent
            and "Mozilla/" not in agent
            and response.content_type == "application/pkix-cert"
        ):
            response.content_type = "text/html"  # what some servers do to non-browsers
        return response

    # --- pages ---------------------------------------------------------------
    def _page(self, title: str, body: str) -> web.Response:
        return web.Response(
            text=_PAGE.format(ca_name=self.ca_name, title=title, body=body),
            content_type="text/html",
        )

    async def _home(self, request: web.Request) -> web.Response:
        return self._page("Welcome", _HOME)

    def _sign(self, req: CertRequest) -> None:
        csr = req.csr
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        except x509.ExtensionNotFound:
            sans = []
        cn = csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        req.cert, _ = self.issuing.issue(
            str(cn[0].value) if cn else (sans[0] if sans else "adcs-client"),
            sans,
            public_key=csr.public_key(),
            eku=TEMPLATES[req.template],
            days=730,
        )
        req.status, req.message = "issued", "Issued"

    async def _certfnsh(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("Mode") != "newreq" or "CertRequest" not in form:
            return self._page(
                "Error",
                _ERROR.format(
                    message="Invalid request. 0x80070057 (WIN32: 87 ERROR_INVALID_PARAMETER)"
                ),
            )
        attrib = str(form.get("CertAttrib", ""))
        match = re.search(r"CertificateTemplate:([^\r\n]+)", attrib)
        template = match.group(1).strip() if match else ""
        try:
            csr = x509.load_pem_x509_csr(str(form["CertRequest"]).encode())
        except ValueError:
            return self._page(
                "Error",
                _ERROR.format(
                    message="Error Parsing Request  ASN1 bad tag value met. 0x8009310b (ASN: 267 CRYPT_E_ASN1_BADTAG)"
                ),
            )
        req = CertRequest(next(self._ids), csr, template, USER.get())
        self.requests[req.req_id] = req
        if template not in TEMPLATES:
            req.status = "denied"
            req.message = (
                "Denied by Policy Module  0x80094800, The request was for a certificate template "
                f"that is not supported by the Active Directory Certificate Services policy: {template}."
            )
        elif template in self.deny_templates:
            req.status, req.message = "denied", self.deny_templates[template]
        elif not self.manager_approval:
            self._sign(req)
        if req.status == "issued":
            return self._page("Certificate Issued", _ISSUED.format(req_id=req.req_id))
        if req.status == "pending":
            return self._page("Certificate Pending", _PENDING.format(req_id=req.req_id))
        return self._page("Certificate Request Denied", _DENIED.format(message=req.message))

    async def _certnew_cer(self, request: web.Request) -> web.Response:
        req_id = request.query.get("ReqID", "")
        enc = request.query.get("Enc", "bin")
        if req_id == "CACert":
            cert = self.issuing.cert
        else:
            req = self.requests.get(int(req_id)) if req_id.isdigit() else None
            if req is None:
                return self._page(
                    "Certificate Pending",
                    _RETRIEVE.format(
                        info="Your certificate request was not found.",
                        req_id=req_id,
                        message="Error retrieving request. Cannot find object or property. 0x80092004 (-2146885628 CRYPT_E_NOT_FOUND)",
                    ),
                )
            if req.cert is None:
                info = (
                    "Your certificate request was denied."
                    if req.status == "denied"
                    else "Your certificate request is still pending."
                )
                return self._page(
                    "Certificate Pending",
                    _RETRIEVE.format(info=info, req_id=req.req_id, message=req.message),
                )
            cert = req.cert
        body = cert_pem(cert) if enc == "b64" else cert.public_bytes(serialization.Encoding.DER)
        return web.Response(body=body, content_type="application/pkix-cert")

    async def _certcarc(self, request: web.Request) -> web.Response:
        return self._page(
            "Download a CA Certificate", _CARC.format(renewals=0, ca_name=self.ca_name)
        )

    async def _certnew_p7b(self, request: web.Request) -> web.Response:
        req_id = request.query.get("ReqID", "")
        certs = self.issuing.chain()
        if req_id.isdigit():
            req = self.requests.get(int(req_id))
            if req is None or req.cert is None:
                return self._page("Error", _ERROR.format(message="Cannot find object or property."))
            certs = [req.cert, *certs]
        der = pkcs7.serialize_certificates(certs, serialization.Encoding.DER)
        body = base64.encodebytes(der) if request.query.get("Enc") == "b64" else der
        return web.Response(body=body, content_type="application/x-pkcs7-certificates")


def main(argv: list[str] | None = None) -> int:
    """Run the certsrv simulator in the foreground: `python -m lab.adcs [--approval]`."""
    import argparse  # noqa: PLC0415
    import time  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m lab.adcs")
    parser.add_argument("--approval", action="store_true", help="CA manager approval mode")
    args = parser.parse_args(argv)
    sim = ADCSSimulator(manager_approval=args.approval).start()
    print(
        f"AD CS certsrv at {sim.url} (CORP\\certd / Adcs-Secret1, Basic or NTLM; templates "
        f"{', '.join(TEMPLATES)}), trust anchor {sim.trust_anchor}"
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
