"""EST connector (RFC 7030, RFC 8951): cacerts, simpleenroll/simplereenroll, csrattrs, labels,
HTTP Basic or Digest and/or TLS client-certificate (RA) auth, 202 + Retry-After as Pending.

Bodies are sent as base64 in 64-column lines with `Content-Transfer-Encoding: base64`:
servers built on Cisco libest read the CSR through OpenSSL's line-oriented base64 BIO
(`est_server_parse_csr`), which decodes nothing from one long unbroken line, and answer
HTTP 400 "Invalid or corrupted pkcs10 request". Answers are read in any line ending, as
base64, binary DER or PEM, under `application/pkcs7-mime` with or without
`smime-type=certs-only`.

A pending request is continued by sending the same CSR again (RFC 7030 section 4.2.3), so
the handle carries the CSR; the CA recognises it and does not open a second request.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from expressway_certd.monitor.facts import EKU_CONFIG_NAMES, pkcs7_certificates
from expressway_certd.renewers.ca.base import (
    CACapabilities,
    CheckResult,
    ConnectorBase,
    Issued,
    Pending,
    RenewalWindow,
    client_ssl_context,
    order_chain,
    parse_retry_after,
    retry_at,
)
from expressway_certd.renewers.ca.est_config import ESTConfig
from expressway_certd.renewers.ca.httpclient import (
    Reply,
    StatusWords,
    basic_auth,
    raise_for_status,
    send,
)

_OID_NAMES = {
    "1.2.840.113549.1.9.14": "extensionRequest",
    "1.2.840.113549.1.9.7": "challengePassword",
    "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
    "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
    "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
    "1.3.132.0.34": "secp384r1",
    "1.2.840.10045.2.1": "id-ecPublicKey",
    "1.2.840.113549.1.1.1": "rsaEncryption",
    "1.2.840.113549.1.9.1": "emailAddress",
    "1.3.6.1.1.1.1.22": "macAddress",
    "2.16.840.1.101.3.4.2.2": "sha384",
}


BASE64_COLUMNS = 64
_MAX_ARC_BITS = 128
PKCS7_TYPES = (
    "application/pkcs7-mime",
    "application/pkcs7",
    "application/x-pkcs7-mime",
    "application/x-pkcs7-certificates",
)


def encode_body(der: bytes) -> bytes:
    """DER as base64 in 64-column CRLF-terminated lines (RFC 2045 allows at most 76), the
    shape OpenSSL's PEM/BIO base64 writer produces and its line-oriented reader needs."""
    text = base64.b64encode(der)
    lines = [text[i : i + BASE64_COLUMNS] for i in range(0, len(text), BASE64_COLUMNS)]
    return b"".join(line + b"\r\n" for line in lines)


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """`application/pkcs7-mime; smime-type="certs-only"` -> (type, {"smime-type": "certs-only"})."""
    main, *params = (content_type or "").split(";")
    parsed: dict[str, str] = {}
    for param in params:
        key, sep, value = param.partition("=")
        if sep:
            parsed[key.strip().lower()] = value.strip().strip('"').lower()
    return main.strip().lower(), parsed


def decode_body(body: bytes, transfer_encoding: str | None) -> bytes:
    """The DER inside an EST answer: base64 (with any line breaks) unless sent as binary or PEM.
    A PEM body whose base64 does not decode is returned as is (the DER reader refuses it).
    Trailing NUL bytes after base64 are dropped: libest's example estserver sends its
    csrattrs with the C string's terminator (`sizeof(TEST_CSR)`); the binary form is kept."""
    stripped = body.rstrip(b"\x00").strip()
    if stripped.startswith(b"-----BEGIN"):
        lines = [ln for ln in stripped.splitlines() if not ln.startswith(b"-----")]
        try:
            return base64.b64decode(b"".join(lines))
        except (binascii.Error, ValueError):
            return body
    if (transfer_encoding or "").strip().lower() == "binary":
        return body
    try:
        return base64.b64decode(b"".join(stripped.split()), validate=True)
    except (binascii.Error, ValueError):
        return body  # some servers send DER regardless of what RFC 8951 says


def _der_items(data: bytes) -> list[tuple[int, bytes]]:
    """Top-level DER TLVs of `data` as (tag, content); a truncated TLV ends the list."""
    out: list[tuple[int, bytes]] = []
    i = 0
    while i + 2 <= len(data):
        tag = data[i]
        length = data[i + 1]
        i += 2
        if length & 0x80:
            n = length & 0x7F
            if i + n > len(data):
                break
            length = int.from_bytes(data[i : i + n], "big")
            i += n
        if i + length > len(data):
            break
        out.append((tag, data[i : i + length]))
        i += length
    return out


def _oid(content: bytes) -> str:
    if not content:
        return ""
    parts = [content[0] // 40, content[0] % 40]
    value = 0
    for byte in content[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
        if value.bit_length() > _MAX_ARC_BITS:
            return ""  # no real OID has such an arc; str() of it would exceed int's digit cap
    return ".".join(str(p) for p in parts)


def is_csrattrs(der: bytes) -> bool:
    """Whether `der` is one DER SEQUENCE (RFC 7030 4.5.2 CsrAttrs), the whole of it."""
    items = _der_items(der)
    return len(items) == 1 and items[0][0] == 0x30 and _der_length(der) == len(der)


def _der_length(data: bytes) -> int:
    """Bytes taken by the first TLV of `data` (header + content); 0 when truncated."""
    if len(data) < 2:
        return 0
    length, header = data[1], 2
    if length & 0x80:
        n = length & 0x7F
        length, header = int.from_bytes(data[2 : 2 + n], "big"), 2 + n
    return header + length if header + length <= len(data) else 0


def parse_csrattrs(der: bytes) -> list[str]:
    """The OIDs (and attribute types) of a CsrAttrs SEQUENCE, named where known."""
    (tag, content), *_ = _der_items(der) or [(0, b"")]
    if tag != 0x30:
        return []
    names = []
    for item_tag, item in _der_items(content):
        inner = _der_items(item) if item_tag == 0x30 else []
        if item_tag == 0x06:
            oid = _oid(item)
        elif inner and inner[0][0] == 0x06:
            oid = _oid(inner[0][1])
        else:
            continue
        if not oid:
            continue
        names.append(_OID_NAMES.get(oid, oid))
    return names


# libest's --enforce-csr (est_server_enforce_csrattr): the CSR lacks what /csrattrs lists.
_CSRATTRS_MISSING = b"CSR Attributes missing"
_CSRATTRS_FIX = (
    "the CA requires every attribute its /csrattrs lists in the CSR (`ca-check` shows "
    "them); make the CSR on the Expressway with those fields, or ask the CA operator to stop "
    "enforcing CSR attributes for this label"
)

# RFC 7030 3.5: a server may require the CSR to carry the TLS tls-unique value (PoP). libest
# 3.2.0 answers a CSR without it 401 "Proof of Possession Mismatch." (EST_BODY_POP_MISMATCH).
_POP_MISMATCH = b"Proof of Possession Mismatch"
_POP_FIX = (
    "the server requires proof-of-possession (the TLS tls-unique value in the CSR's "
    "challengePassword), which a CSR made on the Expressway cannot carry: authenticate with an "
    "RA certificate (client_cert with EKU id-kp-cmcRA, which libest exempts from the check) or "
    "ask the CA operator to turn PoP off for this label"
)
_BAD_CSR_FIX = (
    "the server could not read the CSR or it failed the server's checks: check the CSR "
    "(`openssl req -verify -in FILE`); tell the CA operator what it said"
)


class ESTConnector(ConnectorBase):
    """An EST CA. Construct once per config; call `aclose()` when done."""

    def __init__(self, config: ESTConfig, *, data_dir: Path | None = None) -> None:
        super().__init__(config.name, "est")
        del data_dir  # EST keeps no private state of its own
        self.config = config
        self._url = config.url.rstrip("/")
        if not self._url.startswith("https://") or "/.well-known/est" not in self._url:
            raise self.error(
                "config",
                f"url {config.url!r} is not an EST base URL",
                "use https://HOST[:PORT]/.well-known/est[/LABEL]",
                reason="config",
            )
        if config.username is None and config.client_cert is None:
            raise self.error(
                "config",
                "no credentials",
                "set username + password or client_cert + client_key",
                reason="config",
            )
        password = config.client_key_password
        try:
            self._ssl = client_ssl_context(
                config.trust_anchor,
                config.client_cert,
                config.client_key,
                password.reveal() if password is not None else None,
            )
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise self.error(
                "config",
                f"cannot load trust_anchor or client_cert/client_key ({exc})",
                "give PEM files: the CA certificate that signed the EST server's TLS "
                "certificate, and a client certificate with its key (client_key_password "
                "when the key is encrypted)",
                reason="config",
            ) from None
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"ESTConnector(name={self.name!r}, url={self._url!r})"

    def _client(self) -> aiohttp.ClientSession:
        """One session: Basic sent with every request, or Digest answering the server's
        challenge (aiohttp's DigestAuthMiddleware, RFC 7616), as `http_auth` says."""
        if self._session is None or self._session.closed:
            headers: dict[str, str] = {}
            middlewares: tuple[aiohttp.DigestAuthMiddleware, ...] = ()
            if self.config.username is not None and self.config.password is not None:
                user, password = self.config.username, self.config.password.reveal()
                if self.config.http_auth == "digest":
                    middlewares = (aiohttp.DigestAuthMiddleware(user, password),)
                else:
                    headers["Authorization"] = basic_auth(user, password)
            self._session = aiohttp.ClientSession(
                headers=headers,
                middlewares=middlewares,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout.total_seconds()),
                connector=aiohttp.TCPConnector(ssl=self._ssl),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, step: str, method: str, path: str, **kwargs: Any) -> Reply:
        with self.measure(step):
            reply = await send(
                self,
                self._client(),
                step,
                method,
                f"{self._url}/{path}",
                trust_fix="set trust_anchor to the PEM of the CA that signed the EST server's "
                "TLS certificate (RFC 7030 requires an explicit anchor)",
                **kwargs,
            )
            words = self._words(step, reply)
            return raise_for_status(self, step, f"{self._url}/{path}", reply, words)

    def _words(self, step: str, reply: Reply) -> StatusWords:
        bad_request_fix, auth, auth_fix = None, "our credentials", self._auth_fix()
        if step in ("simpleenroll", "simplereenroll"):
            missing_attrs = _CSRATTRS_MISSING in reply.body
            bad_request_fix = _CSRATTRS_FIX if missing_attrs else _BAD_CSR_FIX
            if reply.status == 401 and _POP_MISMATCH in reply.body:
                auth, auth_fix = 'the CSR ("Proof of Possession Mismatch.")', _POP_FIX
        return StatusWords(
            server="the EST server",
            auth=auth,
            auth_fix=auth_fix,
            forbidden_fix="ask the CA operator to allow this account or RA certificate to "
            "enroll on this label",
            not_found_fix="check the url and the EST label (…/.well-known/est/LABEL)",
            server_error_fix="the request is retried later; tell the CA operator if it persists",
            refused_fix="fix what the CA says, then submit again",
            bad_request_fix=bad_request_fix,
        )

    def _auth_fix(self) -> str:
        if self.config.username is None:
            return (
                "the server did not accept the client certificate alone: check client_cert is "
                "one its RA/client CA issued, or add username + password if it also wants "
                "HTTP Basic"
            )
        other = "basic" if self.config.http_auth == "digest" else "digest"
        scheme = (
            f"check username/password; if the server wants HTTP {other.capitalize()} (libest "
            f'answers the other scheme with a bare 401), set http_auth = "{other}"'
        )
        if self.config.client_cert is None:
            return (
                f"{scheme}; if the server authenticates clients by certificate, set "
                "client_cert + client_key (an RA certificate it accepts)"
            )
        return f"{scheme}; check client_cert is one the CA accepts"

    def _certs(self, step: str, reply: Reply) -> list[x509.Certificate]:
        kind, params = media_type(reply.headers.get("Content-Type"))
        smime = params.get("smime-type", "certs-only")
        if (kind and kind not in PKCS7_TYPES) or smime != "certs-only":
            raise self.error(
                step,
                f"the answer is {reply.headers.get('Content-Type')!r}, not a PKCS#7 "
                f"certs-only bag ({reply.text(120)})",
                "check the url points at an EST server and not at a login page or proxy",
                reason="bad_response",
            )
        der = decode_body(reply.body, reply.headers.get("Content-Transfer-Encoding"))
        try:
            return pkcs7_certificates(der)
        except ValueError:
            raise self.error(
                step,
                f"the answer is not a PKCS#7 certs-only bag (Content-Type {reply.content_type!r})",
                "check the url points at an EST server",
                reason="bad_response",
            ) from None

    async def ca_chain(self) -> tuple[x509.Certificate, ...]:
        certs = self._certs("cacerts", await self._request("cacerts", "GET", "cacerts"))
        return tuple(_issuer_first(certs))

    async def csr_attributes(self) -> list[str]:
        """What the CA asks to see in the CSR (RFC 7030 section 4.5); empty when nothing."""
        reply = await self._request("csrattrs", "GET", "csrattrs")
        if reply.status == 204 or not reply.body.rstrip(b"\x00").strip():
            return []
        der = decode_body(reply.body, reply.headers.get("Content-Transfer-Encoding"))
        if not is_csrattrs(der):
            raise self.error(
                "csrattrs",
                f"the answer is not a CsrAttrs SEQUENCE (Content-Type {reply.content_type!r}, "
                f"{len(reply.body)} bytes)",
                "check the url points at an EST server; ask the CA operator what its /csrattrs "
                "should serve",
                reason="bad_response",
            )
        return parse_csrattrs(der)

    def capabilities(self) -> CACapabilities:
        ekus = None
        if self.config.ekus is not None:
            ekus = frozenset(EKU_CONFIG_NAMES[e] for e in self.config.ekus)
        return CACapabilities(
            "est", None, ekus, "" if ekus else "EKUs are decided by the EST CA's profile"
        )

    async def renewal_window(self, leaf: x509.Certificate) -> RenewalWindow | None:
        return None

    async def submit(self, csr: x509.CertificateSigningRequest) -> Issued | Pending:
        der_b64 = base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode()
        handle = self.new_handle(csr=der_b64, operation=self.config.operation)
        return self.outcome("submit", await self._enroll(handle, csr), csr)

    async def poll(self, handle: Mapping[str, Any]) -> Issued | Pending:
        self.check_handle(handle, "csr", "operation")
        csr = x509.load_der_x509_csr(base64.b64decode(handle["csr"]))
        return self.outcome("poll", await self._enroll(dict(handle), csr), csr)

    async def _enroll(
        self, handle: dict[str, Any], csr: x509.CertificateSigningRequest
    ) -> Issued | Pending:
        op = str(handle["operation"])
        reply = await self._request(
            op,
            "POST",
            op,
            data=encode_body(base64.b64decode(handle["csr"])),
            headers={"Content-Type": "application/pkcs10", "Content-Transfer-Encoding": "base64"},
        )
        if reply.status == 202:
            wait = parse_retry_after(reply.headers.get("Retry-After"), 60.0)
            return Pending(handle, retry_at(wait), "waiting for approval at the EST CA")
        if reply.status != 200:
            raise self.error(
                op,
                f"unexpected HTTP {reply.status} ({reply.text()})",
                "check the url points at an EST server",
                reason="bad_response",
            )
        certs = self._certs(op, reply)
        leaf = self.leaf_for(op, certs, csr, "tell the CA operator; submit the CSR again")
        chain = await self.ca_chain()
        return Issued(leaf, order_chain(leaf, list(chain)))

    async def check(self) -> list[CheckResult]:
        results: list[CheckResult] = []
        chain = await self.ca_chain()
        names = ", ".join(c.subject.rfc4514_string() for c in chain)
        results.append(CheckResult("cacerts", True, f"{len(chain)} CA certificate(s): {names}"))
        attrs = await self.csr_attributes()
        results.append(CheckResult("csrattrs", True, ", ".join(attrs) or "no requirements"))
        # An empty enrollment is authenticated before it is parsed: 401 means bad
        # credentials, 400 means they were accepted. Nothing is submitted.
        with self.measure("auth"):
            reply = await send(
                self,
                self._client(),
                "auth",
                "POST",
                f"{self._url}/{self.config.operation}",
                trust_fix="set trust_anchor",
                data=b"",
                headers={"Content-Type": "application/pkcs10"},
            )
        ok = reply.status != 401
        detail = (
            "credentials accepted" if ok else "HTTP 401: check username/password or client_cert"
        )
        results.append(CheckResult("auth", ok, detail))
        return results


def _issuer_first(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    """Order a CA bag as issuing CA first, root last."""
    roots = [c for c in certs if c.subject == c.issuer]
    ordered: list[x509.Certificate] = []
    current = roots[0] if roots else None
    rest = [c for c in certs if c not in roots]
    while current is not None:
        ordered.insert(0, current)
        current = next((c for c in rest if c.issuer == current.subject and c not in ordered), None)
    return ordered + [c for c in certs if c not in ordered]
