"""`[ca.NAME]` with `kind = "est"`: the section the EST connector (renewers/ca/est.py) takes,
declared beside it: each key once, with its default and doc (docs/configuration.md's table is
generated from them). Light: imports no HTTP client (the CLI loads configs fast)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from expressway_certd.monitor.config_base import Secret, Section, key, one_of, required_key
from expressway_certd.monitor.config_ca import (
    CACommon,
    CAKind,
    ekus_key,
    ekus_of,
    https_url,
    private_file,
    with_common,
)

EST_OPERATIONS = ("simpleenroll", "simplereenroll")
EST_HTTP_AUTH = ("basic", "digest")


@dataclass(frozen=True)
class ESTConfig(CACommon):
    name: str
    url: str = required_key("`https://HOST[:PORT]/.well-known/est[/LABEL]`")
    username: str | None = key(
        None, "with `password`: HTTP authentication (and/or `client_cert` + `client_key`)"
    )
    password: Secret | None = key(None, "secret reference: the password of `username`")
    client_cert: Path | None = key(
        None,
        "PEM file: the daemon's own TLS client certificate, usually an RA certificate the EST "
        "server trusts; with `client_key`",
    )
    client_key: Path | None = key(
        None,
        "PEM file: the private key of `client_cert`; it must be mode 0600 or 0400 or the config "
        "is refused",
    )
    client_key_password: Secret | None = key(
        None, "secret reference: the password of an encrypted `client_key` (only with it)"
    )
    operation: str = key("simpleenroll", f"the enrollment request: {one_of(EST_OPERATIONS)}")
    http_auth: str = key(
        "basic",
        f"how `username` + `password` are sent: {one_of(EST_HTTP_AUTH)}; `basic` with every "
        "request, `digest` (HTTP Digest, RFC 7616) answering the server's challenge",
    )
    ekus: frozenset[str] | None = ekus_key()
    kind: str = "est"

    def secrets(self) -> tuple[Secret, ...]:
        return tuple(s for s in (self.password, self.client_key_password) if s is not None)


def parse(file: Path, name: str, s: Section, common: CACommon) -> ESTConfig:
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
    operation = s.get_str("operation") or ESTConfig.operation
    if operation not in EST_OPERATIONS:
        raise s.error("operation", f"must be one of {', '.join(EST_OPERATIONS)}")
    http_auth = (s.get_str("http_auth") or ESTConfig.http_auth).lower()
    if http_auth not in EST_HTTP_AUTH:
        raise s.error("http_auth", f"must be one of {', '.join(EST_HTTP_AUTH)}; got {http_auth!r}")
    if http_auth != "basic" and username is None:
        raise s.error("http_auth", "set only with username + password")
    config = ESTConfig(
        name=name,
        url=url,
        username=username,
        password=password,
        client_cert=client_cert,
        client_key=client_key,
        client_key_password=client_key_password,
        operation=operation,
        ekus=ekus_of(s),
        http_auth=http_auth,
    )
    return with_common(config, common)


EST = CAKind("est", ESTConfig, parse)
