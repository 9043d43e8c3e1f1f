"""A misbehaving CA in front of a well-behaved one: an HTTPS proxy (for Pebble, or a lab
simulator) that rewrites chosen answers (the certificate, the order status) or stalls, for
what the real server never does.

The proxy terminates TLS with its own lab certificate and forwards with the client's Host
header, so the URLs Pebble puts in its answers, and the URL every JWS names, are the proxy's:
nothing in a body needs rewriting for the protocol to work. A `Fault` sees each answer and
may replace it.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from expressway_certd_lab.pki import CA, SERVER_AUTH, write_key_and_chain

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
)


@dataclass
class Answer:
    """One HTTP answer on its way back to the client."""

    status: int
    headers: dict[str, str]
    body: bytes


# (method, path, answer) -> answer to send instead (or the same one)
Fault = Callable[[str, str, Answer], Answer]


def no_fault(method: str, path: str, answer: Answer) -> Answer:
    return answer


def pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def is_certificate(answer: Answer) -> bool:
    return answer.headers.get("Content-Type", "").startswith("application/pem-certificate-chain")


def rewrite_certificate(
    change: Callable[[list[x509.Certificate]], list[x509.Certificate]],
) -> Fault:
    """Replace the PEM chain of every certificate download with `change(chain)`."""

    def fault(method: str, path: str, answer: Answer) -> Answer:
        if not is_certificate(answer):
            return answer
        certs = x509.load_pem_x509_certificates(answer.body)
        return Answer(answer.status, answer.headers, pem(change(certs)))

    return fault


def order_turns_invalid(detail: str, order_url: str) -> Fault:
    """From now on the order answers invalid, with `detail`: the CA denied it while pending."""
    order_path = urlsplit(order_url).path

    def fault(method: str, path: str, answer: Answer) -> Answer:
        if path != order_path:
            return answer
        body = json.loads(answer.body)
        body["status"] = "invalid"
        body["error"] = {"type": "urn:ietf:params:acme:error:unauthorized", "detail": detail}
        return Answer(answer.status, answer.headers, json.dumps(body).encode())

    return fault


def rate_limited_once(fragment: str, retry_after: str) -> Fault:
    """The first request to a path containing `fragment` gets 429 `rateLimited` with
    `Retry-After` (RFC 8555 6.6 and 7.3.3 say a CA may answer so to any request); later ones
    pass. `hits` counts the refusals."""

    def fault(method: str, path: str, answer: Answer) -> Answer:
        if fragment not in path or fault.hits:  # type: ignore[attr-defined]
            return answer
        fault.hits += 1  # type: ignore[attr-defined]
        problem = {
            "type": "urn:ietf:params:acme:error:rateLimited",
            "detail": "too many finalizations recently",
        }
        headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-type"}
        headers.update({"Content-Type": "application/problem+json", "Retry-After": retry_after})
        return Answer(429, headers, json.dumps(problem).encode())

    fault.hits = 0  # type: ignore[attr-defined]
    return fault


def stall_on(fragment: str, seconds: float) -> Fault:
    """Hold every answer to a path containing `fragment` for `seconds` (a CA past its timeout)."""

    def fault(method: str, path: str, answer: Answer) -> Answer:
        if fragment in path:
            time.sleep(seconds)
        return answer

    return fault


@dataclass
class FaultProxy:
    """The proxy of `upstream` (scheme://host:port) whose HTTPS `upstream_anchor` verifies:
    `url` (or `directory_url` for Pebble) and `trust_anchor` replace the server's in a config."""

    upstream: str
    upstream_anchor: Path
    directory: Path
    fault: Fault = no_fault
    port: int = 0
    trust_anchor: Path = field(default=Path("/dev/null"))
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def directory_url(self) -> str:
        return f"{self.url}/dir"

    def start(self) -> FaultProxy:
        ca = CA.create("Fault proxy HTTPS CA")
        leaf, key = ca.issue(
            "127.0.0.1", ["127.0.0.1"], eku=[SERVER_AUTH], key_kind="ec", key_size=256
        )
        assert key is not None
        cert_file, key_file = write_key_and_chain(self.directory, "proxy-https", leaf, key, [])
        self.trust_anchor = ca.write_bundle(self.directory / "proxy-root.pem")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(cert_file), str(key_file))
        base = self.upstream
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return None

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                response = requests.request(
                    self.command,
                    base + self.path,
                    data=body,
                    headers=headers,
                    verify=str(proxy.upstream_anchor),
                    timeout=30,
                    allow_redirects=False,
                )
                kept = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
                answer = proxy.fault(
                    self.command, self.path, Answer(response.status_code, kept, response.content)
                )
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.body)

            do_GET = do_POST = do_HEAD = _forward

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def pebble_proxy(pebble_directory_url: str, anchor: Path, directory: Path) -> FaultProxy:
    """A started proxy in front of the Pebble whose directory is at `pebble_directory_url`."""
    return FaultProxy(pebble_directory_url.removesuffix("/dir"), anchor, directory).start()
