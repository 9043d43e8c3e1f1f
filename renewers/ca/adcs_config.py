"""`[ca.NAME]` with `kind = "adcs"`: the section the Microsoft AD CS connector
(renewers/ca/adcs.py) takes, declared beside it. Light: imports no HTTP or Kerberos library."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from expressway_certd.monitor.config_base import Secret, Section
from expressway_certd.monitor.config_ca import CAKind, CALimits, ekus_of, https_url

ADCS_AUTH = ("basic", "ntlm", "kerberos")


@dataclass(frozen=True)
class ADCSConfig:
    name: str
    url: str
    template: str
    auth: str = "ntlm"
    trust_anchor: Path | None = None
    # Roots this CA issues under, pinned: the only CA certificates trust may be pushed for.
    trust_anchors: Path | None = None
    timeout: timedelta = timedelta(seconds=30)
    username: str | None = None
    password: Secret | None = None
    ekus: frozenset[str] | None = None
    limits: CALimits = field(default_factory=CALimits)
    kind: str = "adcs"

    def secrets(self) -> tuple[Secret, ...]:
        return (self.password,) if self.password is not None else ()


def parse(file: Path, name: str, s: Section, limits: CALimits) -> ADCSConfig:
    """A `kind = "adcs"` table."""
    url = https_url(s, "url", "/certsrv", "https://ca.corp.example/certsrv")
    auth = (s.get_str("auth", "ntlm") or "").lower()
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
    return ADCSConfig(
        name=name,
        url=url,
        template=s.get_str("template", required=True) or "",
        auth=auth,
        trust_anchor=s.get_file("trust_anchor", file.parent),
        trust_anchors=s.get_file("trust_anchors", file.parent),
        timeout=s.get_duration("timeout", timedelta(seconds=30)),
        username=username,
        password=password,
        ekus=ekus_of(s),
        limits=limits,
    )


ADCS = CAKind("adcs", frozenset({"url", "template", "auth", "username", "password", "ekus"}), parse)
