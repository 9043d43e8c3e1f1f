"""`[ca.NAME]` with `kind = "est"`: the section the EST connector (renewers/ca/est.py) takes,
declared beside it. Light: imports no HTTP client (the CLI loads configs fast)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from expressway_certd.monitor.config_base import Secret, Section
from expressway_certd.monitor.config_ca import CAKind, CALimits, ekus_of, https_url, private_file

EST_OPERATIONS = ("simpleenroll", "simplereenroll")
EST_HTTP_AUTH = ("basic", "digest")


@dataclass(frozen=True)
class ESTConfig:
    name: str
    url: str
    trust_anchor: Path | None = None
    # Roots this CA issues under, pinned: the only CA certificates trust may be pushed for.
    trust_anchors: Path | None = None
    timeout: timedelta = timedelta(seconds=30)
    username: str | None = None
    password: Secret | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    client_key_password: Secret | None = None  # for an encrypted client_key
    operation: str = "simpleenroll"
    ekus: frozenset[str] | None = None
    limits: CALimits = field(default_factory=CALimits)
    kind: str = "est"
    http_auth: str = "basic"  # how username + password are sent: "basic" or "digest"

    def secrets(self) -> tuple[Secret, ...]:
        return tuple(s for s in (self.password, self.client_key_password) if s is not None)


def parse(file: Path, name: str, s: Section, limits: CALimits) -> ESTConfig:
    """A `kind = "est"` table."""
    url = https_url(s, "url", "/.well-known/est", "https://est.example.com/.well-known/est")
    username = s.get_str("username")
    password = s.get_secret("password", file.parent)
    if (username is None) != (password is None):
        raise s.error("password" if password is None else "username", "set both or neither")
    client_cert = s.get_file("client_cert", file.parent)
    client_key = s.get_file("client_key", file.parent)
    if (client_cert is None) != (client_key is None):
        raise s.error("client_key" if client_key is None else "client_cert", "set both or neither")
    if client_key is not None and s.check_files:
        private_file(s, "client_key", client_key)
    client_key_password = s.get_secret("client_key_password", file.parent)
    if client_key_password is not None and client_key is None:
        raise s.error("client_key_password", "set only with client_key (an encrypted key)")
    if username is None and client_cert is None:
        raise s.error(
            "username",
            "EST needs credentials: username + password (HTTP Basic) or client_cert + client_key",
        )
    operation = s.get_str("operation", "simpleenroll") or ""
    if operation not in EST_OPERATIONS:
        raise s.error("operation", f"must be one of {', '.join(EST_OPERATIONS)}")
    http_auth = (s.get_str("http_auth", "basic") or "").lower()
    if http_auth not in EST_HTTP_AUTH:
        raise s.error("http_auth", f"must be one of {', '.join(EST_HTTP_AUTH)}; got {http_auth!r}")
    if http_auth != "basic" and username is None:
        raise s.error("http_auth", "set only with username + password")
    return ESTConfig(
        name=name,
        url=url,
        trust_anchor=s.get_file("trust_anchor", file.parent),
        trust_anchors=s.get_file("trust_anchors", file.parent),
        timeout=s.get_duration("timeout", timedelta(seconds=30)),
        username=username,
        password=password,
        client_cert=client_cert,
        client_key=client_key,
        client_key_password=client_key_password,
        operation=operation,
        ekus=ekus_of(s),
        http_auth=http_auth,
        limits=limits,
    )


EST = CAKind(
    "est",
    frozenset({
        "url", "username", "password", "client_cert", "client_key", "client_key_password",
        "operation", "http_auth", "ekus",
    }),
    parse,
)  # fmt: skip
