"""One TLS endpoint of an Expressway, and the service names of its ports.

Light on purpose: `scan` and the prober use it without loading the config machinery.
"""

from __future__ import annotations

from dataclasses import dataclass

# Port -> service name, as the Expressway uses them (reference/expressway.md, "TLS ports").
SERVICE_BY_PORT = {
    443: "https",
    5061: "sip-tls",
    5062: "sip-mtls",
    7001: "traversal",
    7002: "traversal",
    8443: "mra",
    5222: "xmpp",
}
STARTTLS_PROTOCOLS = ("xmpp",)


@dataclass(frozen=True)
class Endpoint:
    """One TLS port an Expressway presents its server certificate on."""

    host: str
    port: int
    service: str
    starttls: str | None = None
    sni: str | None = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"
