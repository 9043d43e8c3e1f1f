"""A lab Microsoft AD CS web enrollment (certsrv) server over real HTTPS on loopback.

Answers certfnsh.asp, certnew.cer, certcarc.asp and certnew.p7b with HTML shaped like the real
IIS pages; templates "WebServer" (Server Authentication only, like the stock template) and
"CollabServerClient" (Server + Client Authentication, what Cisco collaboration sites use);
manager approval ("Certificate Pending" until `issue(req_id)`), denial with a disposition
message; pages in English, Korean, German, Japanese or Simplified Chinese (`language`, or the
request's Accept-Language), with the element IDs, links and script of the real pages; Basic
and NTLM (pyspnego acceptor, connection-based like IIS), optionally Extended
Protection (channel binding required) and Negotiate/Kerberos with a keytab.
Imports nothing from monitor/, renewers/ or alerts/.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import contextvars
import hashlib
import html
import itertools
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import spnego
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from expressway_certd_lab.est import ThreadedHTTPS, lab_server_context, pkcs7_der
from expressway_certd_lab.pki import CA, CLIENT_AUTH, SERVER_AUTH, cert_pem
from multidict import CIMultiDict

# The authenticated user of the request being handled (set by the auth middleware).
USER: contextvars.ContextVar[str] = contextvars.ContextVar("user", default="")
TEMPLATES: dict[str, list[x509.ObjectIdentifier]] = {
    "WebServer": [SERVER_AUTH],
    "CollabServerClient": [SERVER_AUTH, CLIENT_AUTH],
}

# Page structure follows Microsoft's certsrv ASP sources (certrsis.asp issued, certrspn.asp
# pending, certrsdn.asp denied, certrser.asp error): the element IDs (locPageTitle,
# locInfoNewReq, locInfoReqID, locDenied, locDispLabel, ...), the certnew.cer?ReqID= links,
# the postLoad script's `nReqId = N` (IE only) and the hidden ReqID field do not change with
# the language; the text inside them does. Where the wording is Microsoft's, it says so:
# - "en": the English sentences of the certsrv ASP sources (Windows Server 2003 source tree,
#   github.com/selfrender/Windows-Server-2003 ds/security/services/ca/certweb/) and the
#   "Your Request Id is N." sentence the public certsrv client parses (magnuswatn/certsrv).
# - "ja": the issued and pending pages (site, titles, the issued, pending, request-id and
#   come-back sentences, the download links) are the wording of the Japanese Windows Server
#   CertSrv ja-JP certrsis.asp / certrspn.asp (the KB2518295 versions, Server 2008 R2 and
#   later), found in the public GitHub code index (see docs/ca-connectors.md). The denied and
#   error pages and the disposition messages are the lab's own rendering.
# - "fr": the pending page's title and request-id sentence ("L\u2019identificateur de votre
#   requête est N."), the error page's title, its "Disposition :" label and "(inconnu)" are the
#   wording of pages captured from a French Windows Server 2025 AD CS, quoted in a public test
#   suite found in the public GitHub code index (search `locInfoReqID`, see
#   docs/ca-connectors.md); the other French sentences are the lab's own.
# - "ko", "de", "zh-CN": no published localised certsrv page was found; every sentence is the
#   lab's own rendering of the English one.
# - The error page's disposition name (locDispError "Error" for 1, else locDispUnknown
#   "(unknown)") follows certrser.asp in the Windows Server 2003 source tree; the French
#   capture shows "5 - (inconnu)" for a request still under submission.
# So these pages prove the connector reads no sentence, and for Japanese issued/pending that
# it reads Windows' own page, not that the other languages are word-for-word Windows.
LANGUAGES = ("en", "ko", "de", "ja", "zh-CN", "fr")
TEXT: dict[str, dict[str, str]] = {
    "en": {
        "site": "Microsoft Active Directory Certificate Services",
        "issued": "Certificate Issued",
        "issued_info": "The certificate you requested was issued to you.",
        "download": "Download certificate",
        "download_chain": "Download certificate chain",
        "pending": "Certificate Pending",
        "pending_new": "Your certificate request has been received. However, you must wait for "
        "an administrator to issue the certificate you requested.",
        "pending_chk": "Your certificate request is still pending. You must wait for an "
        "administrator to issue the certificate you requested.",
        "req_id": "Your Request Id is {req_id}.",
        "return": "Please return to this web site in a day or two to retrieve your certificate.",
        "denied": "Certificate Request Denied",
        "denied_info": "Your certificate request was denied.",
        "contact": "Contact your administrator for further information.",
        "disposition": 'The disposition message is "{message}"',
        "error": "Error",
        "req_failed": "Your request failed. An error occurred while the server was processing "
        "your request.",
        "chk_failed": "An error occurred while the server was checking on your pending "
        "certificate request.",
        "disp_error": "Error",
        "disp_unknown": "(unknown)",
        "disp_label": "Disposition:",
        "disp_msg_label": "Disposition message:",
        "result_label": "Result:",
        "welcome": "Welcome",
        "carc": "Download a CA Certificate, Certificate Chain, or CRL",
        "m_pending": "Taken Under Submission",
        "m_issued": "Issued",
        "m_policy": "Denied by Policy Module",
        "m_template": "The request was for a certificate template that is not supported by the "
        "Active Directory Certificate Services policy: {template}.",
        "m_not_found": "Cannot find object or property.",
        "m_bad_request": "ASN1 bad tag value met.",
        "m_invalid": "The parameter is incorrect.",
    },
    "de": {
        "site": "Microsoft Active Directory-Zertifikatdienste",
        "issued": "Zertifikat wurde ausgestellt",
        "issued_info": "Das angeforderte Zertifikat wurde für Sie ausgestellt.",
        "download": "Zertifikat herunterladen",
        "download_chain": "Zertifikatkette herunterladen",
        "pending": "Zertifikat ausstehend",
        "pending_new": "Ihre Zertifikatanforderung wurde empfangen. Sie müssen jedoch warten, "
        "bis ein Administrator das angeforderte Zertifikat ausstellt.",
        "pending_chk": "Ihre Zertifikatanforderung steht noch aus. Sie müssen warten, bis ein "
        "Administrator das angeforderte Zertifikat ausstellt.",
        "req_id": "Ihre Anforderungs-ID lautet {req_id}.",
        "return": "Kehren Sie in ein oder zwei Tagen zu dieser Website zurück, um Ihr "
        "Zertifikat abzurufen.",
        "denied": "Zertifikatanforderung wurde verweigert",
        "denied_info": "Ihre Zertifikatanforderung wurde verweigert.",
        "contact": "Wenden Sie sich an den Administrator, um weitere Informationen zu erhalten.",
        "disposition": "Die Dispositionsmeldung lautet: \u201e{message}\u201c",
        "error": "Fehler",
        "req_failed": "Fehler bei der Anforderung. Bei der Verarbeitung der Anforderung durch "
        "den Server ist ein Fehler aufgetreten.",
        "chk_failed": "Beim Überprüfen der ausstehenden Zertifikatanforderung ist auf dem "
        "Server ein Fehler aufgetreten.",
        "disp_error": "Fehler",
        "disp_unknown": "(unbekannt)",
        "disp_label": "Disposition:",
        "disp_msg_label": "Dispositionsmeldung:",
        "result_label": "Ergebnis:",
        "welcome": "Willkommen",
        "carc": "Herunterladen eines Zertifizierungsstellenzertifikats, einer Zertifikatkette "
        "oder einer Sperrliste",
        "m_pending": "Wird übermittelt",
        "m_issued": "Ausgestellt",
        "m_policy": "Vom Richtlinienmodul verweigert",
        "m_template": "Die Anforderung bezog sich auf eine Zertifikatvorlage, die von der "
        "Richtlinie der Active Directory-Zertifikatdienste nicht unterstützt wird: {template}.",
        "m_not_found": "Objekt oder Eigenschaft wurde nicht gefunden.",
        "m_bad_request": "ASN1-Wert mit ungültigem Tag gefunden.",
        "m_invalid": "Falscher Parameter.",
    },
    "ko": {
        "site": "Microsoft Active Directory 인증서 서비스",
        "issued": "인증서 발급됨",
        "issued_info": "요청한 인증서가 발급되었습니다.",
        "download": "인증서 다운로드",
        "download_chain": "인증서 체인 다운로드",
        "pending": "인증서 보류 중",
        "pending_new": "인증서 요청을 받았습니다. 하지만 관리자가 요청한 인증서를 발급할 때까지 "
        "기다려야 합니다.",
        "pending_chk": "인증서 요청이 아직 보류 중입니다. 관리자가 요청한 인증서를 발급할 때까지 "
        "기다려야 합니다.",
        "req_id": "요청 ID는 {req_id}입니다.",
        "return": "하루나 이틀 후에 이 웹 사이트로 돌아와서 인증서를 검색하십시오.",
        "denied": "인증서 요청 거부됨",
        "denied_info": "인증서 요청이 거부되었습니다.",
        "contact": "자세한 내용은 관리자에게 문의하십시오.",
        "disposition": '처리 메시지: "{message}"',
        "error": "오류",
        "req_failed": "요청이 실패했습니다. 서버가 요청을 처리하는 동안 오류가 발생했습니다.",
        "chk_failed": "서버가 보류 중인 인증서 요청을 확인하는 동안 오류가 발생했습니다.",
        "disp_error": "오류",
        "disp_unknown": "(알 수 없음)",
        "disp_label": "처리:",
        "disp_msg_label": "처리 메시지:",
        "result_label": "결과:",
        "welcome": "시작",
        "carc": "CA 인증서, 인증서 체인 또는 CRL 다운로드",
        "m_pending": "제출됨",
        "m_issued": "발급됨",
        "m_policy": "정책 모듈이 거부함",
        "m_template": "Active Directory 인증서 서비스 정책에서 지원하지 않는 인증서 템플릿에 "
        "대한 요청입니다: {template}.",
        "m_not_found": "개체 또는 속성을 찾을 수 없습니다.",
        "m_bad_request": "잘못된 ASN1 태그 값이 있습니다.",
        "m_invalid": "매개 변수가 틀립니다.",
    },
    "ja": {
        "site": "Microsoft Active Directory 証明書サービス",
        "issued": "証明書は発行されました",
        "issued_info": "要求した証明書は要求者に発行されました",
        "download": "証明書のダウンロード",
        "download_chain": "証明書チェーンのダウンロード",
        "pending": "保留中の証明書",
        "pending_new": "証明書の要求を受信しました。要求した証明書を管理者が発行するのを\n"
        "お待ちください。",
        "pending_chk": "証明書の要求はまだ保留になっています。要求した証明書を\n"
        "管理者が発行するのをお待ちください。",
        "req_id": "要求 ID は {req_id} です。",
        "return": "証明書を取得するには、1 日から 2 日後にこの Web サイトを再度参照してください。",
        "denied": "証明書の要求は拒否されました",
        "denied_info": "証明書の要求は拒否されました。",
        "contact": "詳細については管理者に問い合わせてください。",
        "disposition": "処理メッセージ: \u300c{message}\u300d",
        "error": "エラー",
        "req_failed": "要求は失敗しました。サーバーが要求を処理中にエラーが発生しました。",
        "chk_failed": "保留中の証明書の要求をサーバーが確認中にエラーが発生しました。",
        "disp_error": "エラー",
        "disp_unknown": "(不明)",
        "disp_label": "処理:",
        "disp_msg_label": "処理メッセージ:",
        "result_label": "結果:",
        "welcome": "ようこそ",
        "carc": "CA 証明書、証明書チェーン、または CRL のダウンロード",
        "m_pending": "提出済み",
        "m_issued": "発行済み",
        "m_policy": "ポリシー モジュールにより拒否されました",
        "m_template": "要求は Active Directory 証明書サービス ポリシーでサポートされていない"
        "証明書テンプレートに対するものでした: {template}。",
        "m_not_found": "オブジェクトまたはプロパティが見つかりません。",
        "m_bad_request": "ASN1 の無効なタグ値です。",
        "m_invalid": "パラメーターが間違っています。",
    },
    "zh-CN": {
        "site": "Microsoft Active Directory 证书服务",
        "issued": "证书已颁发",
        "issued_info": "你申请的证书已颁发给你。",
        "download": "下载证书",
        "download_chain": "下载证书链",
        "pending": "证书挂起",
        "pending_new": "已收到你的证书申请。但是,你必须等待管理员颁发你申请的证书。",
        "pending_chk": "你的证书申请仍处于挂起状态。你必须等待管理员颁发你申请的证书。",
        "req_id": "你的申请 ID 为 {req_id}。",
        "return": "请在一两天后返回此网站以检索你的证书。",
        "denied": "证书申请被拒绝",
        "denied_info": "你的证书申请被拒绝。",
        "contact": "有关详细信息,请与管理员联系。",
        "disposition": "处理消息为\u201c{message}\u201d",
        "error": "错误",
        "req_failed": "你的申请失败。服务器处理你的申请时出错。",
        "chk_failed": "服务器检查你挂起的证书申请时出错。",
        "disp_error": "错误",
        "disp_unknown": "(未知)",
        "disp_label": "处理:",
        "disp_msg_label": "处理消息:",
        "result_label": "结果:",
        "welcome": "欢迎使用",
        "carc": "下载 CA 证书、证书链或 CRL",
        "m_pending": "已提交",
        "m_issued": "已颁发",
        "m_policy": "被策略模块拒绝",
        "m_template": "申请的证书模板不受 Active Directory 证书服务策略支持: {template}。",
        "m_not_found": "找不到对象或属性。",
        "m_bad_request": "遇到 ASN1 错误标记值。",
        "m_invalid": "参数错误。",
    },
    "fr": {
        # Captured from a French Windows Server 2025 AD CS (see the comment above): the pending
        # title and request-id sentence, the error title, the disposition label and "(inconnu)".
        "pending": "Certificat en attente",
        "req_id": "L\u2019identificateur de votre requête est {req_id}.",
        "error": "Erreur",
        "disp_label": "Disposition :",
        "disp_unknown": "(inconnu)",
        # The lab's own French for the rest.
        "site": "Services de certificats Active Directory Microsoft",
        "issued": "Certificat émis",
        "issued_info": "Le certificat que vous avez demandé vous a été émis.",
        "download": "Télécharger le certificat",
        "download_chain": "Télécharger la chaîne de certificats",
        "pending_new": "Votre demande de certificat a été reçue. Vous devez cependant attendre "
        "qu\u2019un administrateur émette le certificat demandé.",
        "pending_chk": "Votre demande de certificat est toujours en attente. Vous devez attendre "
        "qu\u2019un administrateur émette le certificat demandé.",
        "return": "Revenez sur ce site dans un jour ou deux pour récupérer votre certificat.",
        "denied": "Demande de certificat refusée",
        "denied_info": "Votre demande de certificat a été refusée.",
        "contact": "Contactez votre administrateur pour plus d\u2019informations.",
        "disposition": "Le message de disposition est \u00ab\u00a0{message}\u00a0\u00bb",
        "req_failed": "Votre demande a échoué. Une erreur s\u2019est produite lors du "
        "traitement de votre demande par le serveur.",
        "chk_failed": "Une erreur s\u2019est produite lors de la vérification de votre demande "
        "de certificat en attente par le serveur.",
        "disp_error": "Erreur",
        "disp_msg_label": "Message de disposition :",
        "result_label": "Résultat :",
        "welcome": "Bienvenue",
        "carc": "Télécharger un certificat d\u2019autorité de certification, une chaîne de "
        "certificats ou une liste de révocation",
        "m_pending": "Prise en compte",
        "m_issued": "Émis",
        "m_policy": "Refusé par le module de stratégie",
        "m_template": "La demande portait sur un modèle de certificat non pris en charge par la "
        "stratégie des services de certificats Active Directory : {template}.",
        "m_not_found": "Impossible de trouver l\u2019objet ou la propriété.",
        "m_bad_request": "Valeur de balise ASN1 incorrecte.",
        "m_invalid": "Paramètre incorrect.",
    },
}

# Disposition codes (certcli.h, as certrser.asp prints them) and HRESULTs (winerror.h).
CR_DISP_ERROR, CR_DISP_DENIED, CR_DISP_ISSUED, CR_DISP_UNDER_SUBMISSION = 1, 2, 3, 5
CERTSRV_E_UNSUPPORTED_CERT_TYPE = "0x80094800 (-2146875392 CERTSRV_E_UNSUPPORTED_CERT_TYPE)"
CRYPT_E_NOT_FOUND = "0x80092004 (-2146885628 CRYPT_E_NOT_FOUND)"
CRYPT_E_ASN1_BADTAG = "0x8009310b (ASN: 267 CRYPT_E_ASN1_BADTAG)"
E_INVALIDARG = "0x80070057 (WIN32: 87 ERROR_INVALID_PARAMETER)"

_PAGE = """<HTML><Head>
<Meta HTTP-Equiv="Content-Type" Content="text/html; charset=UTF-8">
<Title>{site}</Title>
</Head><Body BgColor=#FFFFFF Link=#0000FF VLink=#0000FF ALink=#0000FF{onload}><Font ID=locPageFont Face="Arial">
<Table Border=0 CellSpacing=0 CellPadding=4 Width=100% BgColor=#008080>
<TR><TD><Font Color=#FFFFFF><LocID ID=locMSCertSrv><Font Face="Arial" Size=-1><B><I>Microsoft</I></B>
{site_rest}</Font></LocID> &nbsp;--&nbsp; {ca_name}&nbsp;</Font></TD></TR>
</Table>
<P ID=locPageTitle> <B> {title} </B>
{body}
</Font></Body></HTML>
"""

_ISSUED = """<P ID=locInfo> {issued_info}</P>
<Input Type=Radio ID=rbDerEnc Name=rbEncoding Checked><LocID ID=locDerEnc>DER</LocID>
<Input Type=Radio ID=rbB64Enc Name=rbEncoding><LocID ID=locB64Enc>Base 64</LocID>
<Table><TR><TD><LocID ID=locDownloadCert1><A Href="certnew.cer?ReqID={req_id}&amp;Enc=bin">{download}</A></LocID></TD></TR>
<TR><TD><LocID ID=locDownloadCert2><A Href="certnew.p7b?ReqID={req_id}&amp;Enc=bin">{download_chain}</A></LocID></TD></TR></Table>
<Script Language="JavaScript">
    function handleGetCert() {{ location="certnew.cer?ReqID={req_id}&"+getEncoding(); }}
</Script>"""

# certrspn.asp of Server 2008 R2 and later (KB2518295): the request id is in locInfoReqID;
# the postLoad script (with the commented-out `nReqId = N` line, rendered all the same) is
# sent to Internet Explorer only; no hidden ReqID field on a new request.
_PENDING = """<P ID=locInfoNewReq> {pending_new} </P>

<P ID=locInfoReqID>
{req_id_text}
</P>

<P ID=locInstructions> {return_text}</P>
{script}"""

_PENDING_IE_SCRIPT = """<Script Language="VBScript">
	Sub postLoad
		On Error Resume Next
				' Dim nReqId
				' nReqId = {req_id}
	End Sub
</Script>"""


def browser_type(user_agent: str) -> str:
    """certsbrt.inc's sBrowser: "Text" without "Mozilla", "NN" without "MSIE", else "IE"."""
    if "Mozilla" not in user_agent:
        return "Text"
    return "IE" if "MSIE" in user_agent else "NN"


_DENIED = """<P ID=locDenied> {denied_info} </P>
<P ID=locContactAdmin>{contact}
</P>
<P><LocID ID=locDispMsg>{disposition}</LocID></P>"""

_ERROR = """<P ID={failed_id}> {failed} </P>
<P ID=locContactAdmin>{contact}</P>
<DL><DD><DL>
<DT ID=locDispLabel><Font Size=-1><B>{disp_label}</B></Font></DT><DD>
	{disposition:X} <LocID ID=locDispSpacer>-</LocID> {disposition_name}
</DD>
<DT ID=locDispMsgLabel><Font Size=-1><B>{disp_msg_label}</B></Font></DT><DD>
	{message}
</DD>
<DT ID=locResultLabel><Font Size=-1><B>{result_label}</B></Font></DT><DD>
	{result}
</DD>
</DL></DD></DL>
{form}"""

_HOME = """<P ID=locPageDesc>Use this Web site to request a certificate.</P>
<LocID ID=locTasks><A Href="/certsrv/certrqus.asp">Request a certificate</A><BR>
<A Href="/certsrv/certckpn.asp">View the status of a pending certificate request</A><BR>
<A Href="/certsrv/certcarc.asp">Download a CA certificate, certificate chain, or CRL</A></LocID>"""

_CARC = """<Script Language="JavaScript">
var nRenewals={renewals};
var sCAName="{ca_name}";
</Script>"""


def pick_language(accept_language: str, default: str) -> str:
    """The first of LANGUAGES an Accept-Language header asks for (q order), else `default`."""
    wanted: list[tuple[float, str]] = []
    for index, item in enumerate(accept_language.split(",")):
        tag, _, params = item.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        wanted.append((-q + index * 1e-6, tag.strip().lower()))
    for _, tag in sorted(wanted):
        for lang in LANGUAGES:
            if tag == lang.lower() or tag.split("-")[0] == lang.lower().split("-")[0]:
                return lang
    return default


@dataclass
class CertRequest:
    """One request in the CA database."""

    req_id: int
    csr: x509.CertificateSigningRequest
    template: str
    requester: str
    status: str = "pending"  # pending | issued | denied
    message: str = ""  # a denial's disposition message ("" = the CA's own wording)
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
    language: str = "en"  # of the pages when the client sends no Accept-Language we serve
    reject_requests: bool = False  # answer every CSR with the "cannot parse" error page
    # Issue with the first DNS name only, as a template whose subject is built from Active
    # Directory (not "Supply in the request") ignores the CSR's SANs.
    drop_sans: bool = False
    # certnew.p7b with the root first and the leaf last: CryptoAPI's PKCS#7 is a SET
    # (RFC 2315 9.1, RFC 5652 5.1), and what reads it must not take the order as the chain's.
    misorder: bool = False
    # Certify a key of the CA's own instead of the CSR's (a CA that mixed up two requests).
    other_key: bool = False
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
        """Deny a pending request as a CA manager would, with this disposition message."""
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
        page = self._html("en", "401 - Unauthorized", "")
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
    def _lang(self, request: web.Request) -> str:
        return pick_language(request.headers.get("Accept-Language", ""), self.language)

    def _html(self, lang: str, title: str, body: str, onload: str = "") -> str:
        site = TEXT[lang]["site"]
        return _PAGE.format(
            site=site,
            site_rest=site.removeprefix("Microsoft "),
            ca_name=self.ca_name,
            title=title,
            body=body,
            onload=onload,
        )

    def _page(self, lang: str, title_key: str, body: str, onload: str = "") -> web.Response:
        return web.Response(
            text=self._html(lang, TEXT[lang][title_key], body, onload),
            content_type="text/html",
            charset="utf-8",
            headers={"Content-Language": lang},
        )

    def _error_page(
        self,
        lang: str,
        disposition: int,
        message: str,
        result: str,
        *,
        check_pending: str | None = None,
    ) -> web.Response:
        """certrser.asp: the failure, then Disposition / Disposition message / Result."""
        t = TEXT[lang]
        form = ""
        if check_pending is not None:
            form = (
                '<Form Action="certrmpn.asp" Method=Post><Input Type=Hidden Name=Action '
                f'Value="rmpn"><Input Type=Hidden Name=ReqID Value="{check_pending}"></Form>'
            )
        body = _ERROR.format(
            failed_id="locReqFailed" if check_pending is None else "locChkPndFailed",
            failed=t["req_failed"] if check_pending is None else t["chk_failed"],
            contact=t["contact"],
            disp_label=t["disp_label"],
            disposition=disposition,
            disposition_name=(
                f"<LocID ID=locDispError>{t['disp_error']}</LocID>"
                if disposition == CR_DISP_ERROR
                else f"<LocID ID=locDispUnknown>{t['disp_unknown']}</LocID>"
            ),
            disp_msg_label=t["disp_msg_label"],
            message=html.escape(message),
            result_label=t["result_label"],
            result=html.escape(result),
            form=form,
        )
        return self._page(lang, "error", body)

    async def _home(self, request: web.Request) -> web.Response:
        return self._page(self._lang(request), "welcome", _HOME)

    def _sign(self, req: CertRequest) -> None:
        csr = req.csr
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        except x509.ExtensionNotFound:
            sans = []
        if self.drop_sans:
            sans = sans[:1]
        cn = csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        req.cert, _ = self.issuing.issue(
            str(cn[0].value) if cn else (sans[0] if sans else "adcs-client"),
            sans,
            public_key=None if self.other_key else csr.public_key(),
            key_kind="ec",
            key_size=256,
            eku=TEMPLATES[req.template],
            days=730,
        )
        req.status = "issued"

    def _denial(self, lang: str, req: CertRequest) -> str:
        """The disposition message of a denied request, in the CA's language."""
        if req.message:
            return req.message
        t = TEXT[lang]
        return f"{t['m_policy']}  {CERTSRV_E_UNSUPPORTED_CERT_TYPE.split(maxsplit=1)[0]}, " + t[
            "m_template"
        ].format(template=req.template)

    async def _certfnsh(self, request: web.Request) -> web.Response:
        lang = self._lang(request)
        t = TEXT[lang]
        form = await request.post()
        if form.get("Mode") != "newreq" or "CertRequest" not in form:
            return self._error_page(lang, CR_DISP_ERROR, t["m_invalid"], E_INVALIDARG)
        attrib = str(form.get("CertAttrib", ""))
        match = re.search(r"CertificateTemplate:([^\r\n]+)", attrib)
        template = match.group(1).strip() if match else ""
        try:
            if self.reject_requests:
                raise ValueError("reject_requests")
            csr = x509.load_pem_x509_csr(str(form["CertRequest"]).encode())
        except ValueError:
            return self._error_page(lang, CR_DISP_ERROR, t["m_bad_request"], CRYPT_E_ASN1_BADTAG)
        req = CertRequest(next(self._ids), csr, template, USER.get())
        self.requests[req.req_id] = req
        if template not in TEMPLATES:
            req.status = "denied"
        elif template in self.deny_templates:
            req.status, req.message = "denied", self.deny_templates[template]
        elif not self.manager_approval:
            self._sign(req)
        if req.status == "issued":
            body = _ISSUED.format(
                req_id=req.req_id,
                issued_info=t["issued_info"],
                download=t["download"],
                download_chain=t["download_chain"],
            )
            return self._page(lang, "issued", body)
        if req.status == "pending":
            ie = browser_type(request.headers.get("User-Agent", "")) == "IE"
            body = _PENDING.format(
                pending_new=t["pending_new"],
                req_id_text=t["req_id"].format(req_id=req.req_id),
                return_text=t["return"],
                script=_PENDING_IE_SCRIPT.format(req_id=req.req_id) if ie else "",
            )
            return self._page(lang, "pending", body, onload=' OnLoad="postLoad();"' if ie else "")
        disposition = t["disposition"].format(message=html.escape(self._denial(lang, req)))
        body = _DENIED.format(
            denied_info=t["denied_info"], contact=t["contact"], disposition=disposition
        )
        return self._page(lang, "denied", body)

    async def _certnew_cer(self, request: web.Request) -> web.Response:
        lang = self._lang(request)
        t = TEXT[lang]
        req_id = request.query.get("ReqID", "")
        enc = request.query.get("Enc", "bin")
        if req_id == "CACert":
            cert = self.issuing.cert
        else:
            req = self.requests.get(int(req_id)) if req_id.isdigit() else None
            if req is None:
                return self._error_page(
                    lang, CR_DISP_ERROR, t["m_not_found"], CRYPT_E_NOT_FOUND, check_pending=req_id
                )
            if req.cert is None:
                if req.status == "denied":
                    return self._error_page(
                        lang,
                        CR_DISP_DENIED,
                        self._denial(lang, req),
                        "0x80094800" if not req.message else "",
                        check_pending=req_id,
                    )
                return self._error_page(
                    lang, CR_DISP_UNDER_SUBMISSION, t["m_pending"], "", check_pending=req_id
                )
            cert = req.cert
        body = cert_pem(cert) if enc == "b64" else cert.public_bytes(serialization.Encoding.DER)
        return web.Response(body=body, content_type="application/pkix-cert")

    async def _certcarc(self, request: web.Request) -> web.Response:
        return self._page(
            self._lang(request), "carc", _CARC.format(renewals=0, ca_name=self.ca_name)
        )

    async def _certnew_p7b(self, request: web.Request) -> web.Response:
        lang = self._lang(request)
        req_id = request.query.get("ReqID", "")
        certs = self.issuing.chain()
        if req_id.isdigit():
            req = self.requests.get(int(req_id))
            if req is None or req.cert is None:
                return self._error_page(
                    lang, CR_DISP_ERROR, TEXT[lang]["m_not_found"], CRYPT_E_NOT_FOUND
                )
            certs = [req.cert, *certs]
        if self.misorder:
            certs = list(reversed(certs))
        der = pkcs7_der(certs)
        body = base64.encodebytes(der) if request.query.get("Enc") == "b64" else der
        return web.Response(body=body, content_type="application/x-pkcs7-certificates")


def main(argv: list[str] | None = None) -> int:
    """Run the certsrv simulator in the foreground: `python -m expressway_certd_lab.adcs [--approval]`."""

    parser = argparse.ArgumentParser(prog="python -m expressway_certd_lab.adcs")
    parser.add_argument("--approval", action="store_true", help="CA manager approval mode")
    parser.add_argument(
        "--language", choices=LANGUAGES, default="en", help="page language (else Accept-Language)"
    )
    args = parser.parse_args(argv)
    sim = ADCSSimulator(manager_approval=args.approval, language=args.language).start()
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
