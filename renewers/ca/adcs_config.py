"""`[ca.NAME]` with `kind = "adcs"`: the section the Microsoft AD CS connector
(renewers/ca/adcs.py) takes, declared beside it: each key once, with its default and doc
(docs/configuration.md's table is generated from them). Light: imports no HTTP or Kerberos
library."""

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
    with_common,
)

ADCS_AUTH = ("basic", "ntlm", "kerberos")


@dataclass(frozen=True)
class ADCSConfig(CACommon):
    name: str
    url: str = required_key("`https://SERVER/certsrv`, the Web Enrollment pages of the CA")
    template: str = required_key(
        "the certificate template's name (not its display name); it decides the EKUs"
    )
    auth: str = key(
        "ntlm",
        f"how the connector logs in: {one_of(ADCS_AUTH)}; `kerberos` uses the service's ticket "
        "(`kinit -k`) or `username` + `password`",
    )
    username: str | None = key(
        None,
        "`DOMAIN\\user` or `user@domain`; with `password`, required for `basic` and `ntlm`",
    )
    password: Secret | None = key(None, "secret reference: the password of `username`")
    ekus: frozenset[str] | None = ekus_key()
    kind: str = "adcs"

    def secrets(self) -> tuple[Secret, ...]:
        return (self.password,) if self.password is not None else ()


def parse(file: Path, name: str, s: Section, common: CACommon) -> ADCSConfig:
    """A `kind = "adcs"` table."""
    url = https_url(s, "url", "/certsrv", "https://ca.corp.example/certsrv")
    auth = (s.get_str("auth") or ADCSConfig.auth).lower()
    if auth not in ADCS_AUTH:
        raise s.error("auth", f"must be one of {', '.join(ADCS_AUTH)}; got {auth!r}")
    username = s.get_str("username")
    password = s.get_secret("password", file.parent)
    if auth != "kerberos" and (username is None or password is None):
        raise s.error(
            "password" if username else "username",
            f"auth = {auth!r} needs username (DOMAIN\\user or user@domain) and password",
        )
    if (username is None) != (password is None):
        raise s.error("password" if password is None else "username", "set both or neither")
    config = ADCSConfig(
        name=name,
        url=url,
        template=s.get_str("template", required=True) or "",
        auth=auth,
        username=username,
        password=password,
        ekus=ekus_of(s),
    )
    return with_common(config, common)


ADCS = CAKind("adcs", ADCSConfig, parse)
