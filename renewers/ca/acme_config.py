"""`[ca.NAME]` with `kind = "acme"`: the section the ACME connector (renewers/ca/acme.py)
takes, declared beside it. Light: imports no ACME library (the CLI loads configs fast)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from expressway_certd.monitor.config_base import Secret, Section
from expressway_certd.monitor.config_ca import CAKind, CALimits, host_port
from expressway_certd.monitor.errors import ConfigError

ACME_CHALLENGES = ("dns-01", "http-01", "hook")
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1")


@dataclass(frozen=True)
class RFC2136Config:
    """Where and how DNS-01 TXT records are written (RFC 2136 dynamic update, TSIG)."""

    server: str
    port: int
    zone: str | None  # None: found from the SOA of the name
    tsig_key: str
    tsig_secret: Secret
    tsig_algorithm: str = "hmac-sha256"
    propagation_timeout: timedelta = timedelta(minutes=2)
    ttl: int = 60


@dataclass(frozen=True)
class ACMEConfig:
    name: str
    directory: str
    challenge: str = "dns-01"
    trust_anchor: Path | None = None
    # Roots this CA issues under, pinned: the only CA certificates trust may be pushed for.
    trust_anchors: Path | None = None
    timeout: timedelta = timedelta(seconds=30)
    email: str | None = None
    eab_kid: str | None = None
    eab_hmac: Secret | None = None
    profile: str | None = None
    hook: tuple[str, ...] = ()
    hook_timeout: timedelta = timedelta(minutes=5)
    http01_listen: tuple[str, int] = ("0.0.0.0", 80)  # noqa: S104 - the port ACME dials
    rfc2136: RFC2136Config | None = None
    limits: CALimits = field(default_factory=CALimits)
    kind: str = "acme"

    def secrets(self) -> tuple[Secret, ...]:
        tsig = self.rfc2136.tsig_secret if self.rfc2136 else None
        return tuple(s for s in (self.eab_hmac, tsig) if s is not None)


def _rfc2136(file: Path, path: str, table: Any) -> RFC2136Config:
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: {path}: must be a table ([{path}])")
    s = Section(
        file,
        path,
        table,
        {
            "server",
            "zone",
            "tsig_key",
            "tsig_secret",
            "tsig_algorithm",
            "propagation_timeout",
            "ttl",
        },
    )
    host, port = host_port(s, "server", s.get_str("server", required=True) or "", 53)
    secret = s.get_secret("tsig_secret", file.parent)
    if secret is None:
        raise s.error("tsig_secret", "is required: the base64 TSIG secret as env:/file: reference")
    algorithm = (s.get_str("tsig_algorithm", "hmac-sha256") or "").lower()
    if algorithm not in TSIG_ALGORITHMS:
        raise s.error("tsig_algorithm", f"must be one of {', '.join(TSIG_ALGORITHMS)}")
    zone = s.get_str("zone")
    return RFC2136Config(
        server=host,
        port=port,
        zone=zone.rstrip(".") + "." if zone else None,
        tsig_key=s.get_str("tsig_key", required=True) or "",
        tsig_secret=secret,
        tsig_algorithm=algorithm,
        propagation_timeout=s.get_duration("propagation_timeout", timedelta(minutes=2)),
        ttl=s.get_int("ttl", 60, maximum=86400),
    )


def parse(file: Path, name: str, s: Section, limits: CALimits) -> ACMEConfig:
    """A `kind = "acme"` table."""
    directory = (s.get_str("directory", required=True) or "").rstrip("/")
    example = "https://acme-v02.api.letsencrypt.org/directory"
    if s.url_parts("directory", directory, example).scheme != "https":
        raise s.error(
            "directory", f"must be the https:// directory URL of the CA, got {directory!r}"
        )
    challenge = s.get_str("challenge", "dns-01") or ""
    if challenge not in ACME_CHALLENGES:
        raise s.error(
            "challenge", f"must be one of {', '.join(ACME_CHALLENGES)}; got {challenge!r}"
        )
    hook: tuple[str, ...] = ()
    if challenge == "hook":
        raw = s.get_str("hook")
        if raw is None:
            raise s.error(
                "hook",
                "is required with challenge = 'hook': a command called as "
                "'COMMAND present|cleanup DOMAIN TXT_NAME TXT_VALUE'",
            )
        try:
            hook = tuple(shlex.split(raw))
        except ValueError as exc:
            raise s.error("hook", f"cannot split the command into words: {exc}") from exc
        if not hook:
            raise s.error("hook", "is empty; give the command to run")
    elif s.has("hook"):
        raise s.error("hook", f"is only used with challenge = 'hook' (challenge is {challenge!r})")
    rfc2136 = None
    if challenge == "dns-01":
        if "rfc2136" not in s.table:
            raise s.error(
                "rfc2136",
                "is required with challenge = 'dns-01': add a [ca." + name + ".rfc2136] table "
                "with server, tsig_key and tsig_secret",
            )
        rfc2136 = _rfc2136(file, s.key("rfc2136"), s.table["rfc2136"])
    elif "rfc2136" in s.table:
        raise s.error(
            "rfc2136", f"is only used with challenge = 'dns-01' (challenge is {challenge!r})"
        )
    eab_kid = s.get_str("eab_kid")
    eab_hmac = s.get_secret("eab_hmac", file.parent)
    if (eab_kid is None) != (eab_hmac is None):
        raise s.error("eab_hmac" if eab_hmac is None else "eab_kid", "set both or neither (EAB)")
    listen = host_port(s, "http01_listen", s.get_str("http01_listen", "0.0.0.0:80") or "", 80)
    return ACMEConfig(
        name=name,
        directory=directory,
        challenge=challenge,
        trust_anchor=s.get_file("trust_anchor", file.parent),
        trust_anchors=s.get_file("trust_anchors", file.parent),
        timeout=s.get_duration("timeout", timedelta(seconds=30)),
        email=s.get_str("email"),
        eab_kid=eab_kid,
        eab_hmac=eab_hmac,
        profile=s.get_str("profile"),
        hook=hook,
        hook_timeout=s.get_duration("hook_timeout", timedelta(minutes=5)),
        http01_listen=listen,
        rfc2136=rfc2136,
        limits=limits,
    )


ACME = CAKind(
    "acme",
    frozenset({
        "directory", "challenge", "hook", "hook_timeout", "email", "eab_kid", "eab_hmac",
        "profile", "http01_listen", "rfc2136",
    }),
    parse,
)  # fmt: skip
