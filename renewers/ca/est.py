"""EST connector (RFC 7030, RFC 8951): cacerts, simpleenroll/simplereenroll, csrattrs, labels,
HTTP Basic or TLS client-certificate auth, 202 + Retry-After as Pending.

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
from cryptography.hazmat.primitives.serialization import pkcs7

from monitor.config_ca import ESTConfig
from renewers.ca.base import (
    EKU_NAMES,
    Capabilities,
    CheckResult,
    ConnectorBase,
    Issued,
    Pending,
    RenewalWindow,
    client_ssl_context,
    order_chain,
    parse_retry_after,
    pick_leaf,
    retry_at,
)
from renewers.ca.httpclient import Reply, basic_auth, send

_OID_NAMES = {
    "1.2.840.113549.1.9.14": "extensionRequest",
    "1.2.840.113549.1.9.7": "challengePassword",
    "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
    "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
    "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
    "1.3.132.0.34": "secp384r1",
    "1.2.840.10045.2.1": "id-ecPublicKey",
    "1.2.840.113549.1.1.1": "rsaEncryption",
}


def decode_body(body: bytes, transfer_encoding: str | None) -> bytes:
    """The DER inside an EST answer: base64 (with any line breaks) unless sent as binary or PEM."""
    stripped = body.strip()
    if stripped.startswith(b"-----BEGIN"):
        lines = [ln for ln in stripped.splitlines() if not ln.startswith(b"-----")]
        return base64.b64decode(b"".join(lines))
    if (transfer_encoding or "").strip().lower() == "binary":
        return body
    try:
        return base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        return body  # some servers send DER regardless of what RFC 8951 says


def _der_items(data: bytes) -> list[tuple[int, bytes]]:
    """Top-level DER TLVs of `data` as (tag, content)."""
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < len(data):
        tag = data[i]
        length = data[i + 1]
        i += 2
        if length & 0x80:
            n = length & 0x7F
            length = int.from_bytes(data[i : i + n], "big")
            i += n
        out.append((tag, data[i : i + length]))
        i += length
    return out


def _oid(content: bytes) -> str:
    parts = [content[0] // 40, content[0] % 40]
    value = 0
    for byte in content[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(str(p) for p in parts)


def parse_csrattrs(der: bytes) -> list[str]:
    """The OIDs (and attribute types) of a CsrAttrs SEQUENCE, named where known."""
    (tag, content), *_ = _der_items(der) or [(0, b"")]
    if tag != 0x30:
        return []
    names = []
    for item_tag, item in _der_items(content):
        if item_tag == 0x06:
            oid = _oid(item)
        elif item_tag == 0x30 and item and item[0] == 0x06:
            oid = _oid(_der_items(item)[0][1])
        else:
            continue
        names.append(_OID_NAMES.get(oid, oid))
    return names


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
        try:
            self._ssl = client_ssl_context(
                config.trust_anchor, config.client_cert, config.client_key
            )
        except (OSError, ValueError) as exc:
            raise self.error(
                "config",
                f"cannot load trust_anchor or client_cert/client_key ({exc})",
                "give PEM files: the CA certificate that signed the EST server's TLS "
                "certificate, and a matching client certificate and key",
                reason="config",
            ) from None
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"ESTConnector(name={self.name!r}, url={self._url!r})"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers: dict[str, str] = {}
            if self.config.username is not None and self.config.password is not None:
                headers["Authorization"] = basic_auth(
                    self.config.username, self.config.password.reveal()
                )
            self._session = aiohttp.ClientSession(
                headers=headers,
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
            if reply.status == 401:
                raise self.error(
                    step,
                    "the EST server refused our credentials (HTTP 401)",
                    "check username/password, or that client_cert is one the CA accepts",
                    reason="auth",
                )
            if reply.status == 404:
                raise self.error(
                    step,
                    f"{self._url}/{path} does not exist (HTTP 404)",
                    "check the url and the EST label (…/.well-known/est/LABEL)",
                    reason="not_found",
                )
            if reply.status >= 500:
                raise self.error(
                    step,
                    f"the EST server failed (HTTP {reply.status}: {reply.text()})",
                    "the request is retried later; tell the CA operator if it persists",
                    reason="server_error",
                    retryable=True,
                )
            if reply.status >= 400:
                raise self.error(
                    step,
                    f"the EST server refused the request (HTTP {reply.status}: {reply.text()})",
                    "fix what the CA says, then submit again",
                    reason="refused",
                )
            return reply

    def _certs(self, step: str, reply: Reply) -> list[x509.Certificate]:
        der = decode_body(reply.body, reply.headers.get("Content-Transfer-Encoding"))
        try:
            return pkcs7.load_der_pkcs7_certificates(der)
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
        if reply.status == 204 or not reply.body.strip():
            return []
        return parse_csrattrs(
            decode_body(reply.body, reply.headers.get("Content-Transfer-Encoding"))
        )

    def capabilities(self) -> Capabilities:
        ekus = None
        if self.config.ekus is not None:
            ekus = frozenset(EKU_NAMES[e] for e in self.config.ekus)
        return Capabilities(
            "est", None, ekus, "" if ekus else "EKUs are decided by the EST CA's profile"
        )

    async def renewal_window(self, leaf: x509.Certificate) -> RenewalWindow | None:
        return None

    async def submit(self, csr: x509.CertificateSigningRequest) -> Issued | Pending:
        der_b64 = base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode()
        handle = self.new_handle(csr=der_b64, operation=self.config.operation)
        return self.outcome("submit", await self._enroll(handle, csr))

    async def poll(self, handle: Mapping[str, Any]) -> Issued | Pending:
        self.check_handle(handle, "csr", "operation")
        csr = x509.load_der_x509_csr(base64.b64decode(handle["csr"]))
        return self.outcome("poll", await self._enroll(dict(handle), csr))

    async def _enroll(
        self, handle: dict[str, Any], csr: x509.CertificateSigningRequest
    ) -> Issued | Pending:
        op = str(handle["operation"])
        reply = await self._request(
            op,
            "POST",
            op,
            data=str(handle["csr"]).encode(),
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
        leaf = pick_leaf(certs, csr)
        if leaf is None or leaf.public_key() != csr.public_key():
            raise self.error(
                op,
                "the answer holds no certificate for the CSR's key",
                "tell the CA operator; submit the CSR again",
                reason="bad_response",
            )
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
