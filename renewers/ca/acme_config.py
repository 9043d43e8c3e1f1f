"""`[ca.NAME]` with `kind = "acme"`: the section the ACME connector (renewers/ca/acme.py)
takes, declared beside it: each key once, with its default and doc (docs/configuration.md's
tables, the kind's and its `[ca.NAME.rfc2136]` table's, are generated from them). Light:
imports no ACME library (the CLI loads configs fast)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from expressway_certd.monitor.config_base import (
    Secret,
    Section,
    derived,
    key,
    one_of,
    required_key,
    toml_keys,
)
from expressway_certd.monitor.config_ca import CACommon, CAKind, host_port, with_common
from expressway_certd.monitor.errors import ConfigError

ACME_CHALLENGES = ("dns-01", "http-01", "hook")
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1")
DNS_PORT = 53
HTTP01_LISTEN = ("0.0.0.0", 80)  # noqa: S104 - the port ACME dials


@dataclass(frozen=True)
class RFC2136Config:
    """Where and how DNS-01 TXT records are written (RFC 2136 dynamic update, TSIG): the
    `[ca.NAME.rfc2136]` table of `challenge = "dns-01"`."""

    server: str = required_key(
        f"`HOST[:PORT]` (port {DNS_PORT} when omitted): the zone's primary, which accepts "
        "signed updates"
    )
    port: int = derived()  # the port of `server`
    zone: str | None = required_key(
        "the zone the TXT records are written to", shown="none (found from the SOA of the name)"
    )
    tsig_key: str = required_key("the TSIG key's name, as the DNS server knows it")
    tsig_secret: Secret = required_key("secret reference: the base64 TSIG secret")
    tsig_algorithm: str = key("hmac-sha256", one_of(TSIG_ALGORITHMS))
    propagation_timeout: timedelta = key(
        timedelta(minutes=2),
        "how long to wait until the TXT record is served before answering the challenge",
    )
    ttl: int = key(60, "TTL of the TXT records, in seconds")


@dataclass(frozen=True)
class ACMEConfig(CACommon):
    name: str
    directory: str = required_key("the https:// directory URL of the CA")
    challenge: str = key("dns-01", one_of(ACME_CHALLENGES))
    email: str | None = key(None, "contact address of the account (`mailto:`)")
    eab_kid: str | None = key(None, "External Account Binding key id from the CA (with `eab_hmac`)")
    eab_hmac: Secret | None = key(
        None, "secret reference: the External Account Binding HMAC key (with `eab_kid`)"
    )
    profile: str | None = key(
        None, "the certificate profile to ask for; recorded with the certificate"
    )
    hook: tuple[str, ...] = key(
        (),
        'for `challenge = "hook"` (required there): the command, called as '
        "`COMMAND ACTION DOMAIN TXT_NAME TXT_VALUE` with ACTION `present`, then `cleanup`",
        shown="none",
    )
    hook_timeout: timedelta = key(timedelta(minutes=5), "how long one call of `hook` may take")
    http01_listen: tuple[str, int] = key(
        HTTP01_LISTEN,
        '`HOST[:PORT]` the HTTP-01 responder listens on, for `challenge = "http-01"`',
        shown=f'`"{HTTP01_LISTEN[0]}:{HTTP01_LISTEN[1]}"`',
    )
    rfc2136: RFC2136Config | None = key(
        None,
        'for `challenge = "dns-01"` (required there): the `[ca.NAME.rfc2136]` table below',
        shown="none",
    )
    kind: str = "acme"

    def secrets(self) -> tuple[Secret, ...]:
        tsig = self.rfc2136.tsig_secret if self.rfc2136 else None
        return tuple(s for s in (self.eab_hmac, tsig) if s is not None)


def _rfc2136(file: Path, path: str, table: Any) -> RFC2136Config:
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: {path}: must be a table ([{path}])")
    s = Section(file, path, table, toml_keys(RFC2136Config))
    host, port = host_port(s, "server", s.get_str("server", required=True) or "", DNS_PORT)
    secret = s.get_secret("tsig_secret", file.parent)
    if secret is None:
        raise s.error("tsig_secret", "is required: the base64 TSIG secret as env:/file: reference")
    algorithm = (s.get_str("tsig_algorithm") or RFC2136Config.tsig_algorithm).lower()
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
        propagation_timeout=s.get_duration(
            "propagation_timeout", RFC2136Config.propagation_timeout
        ),
        ttl=s.get_int("ttl", RFC2136Config.ttl, maximum=86400),
    )


def _hook(s: Section, challenge: str) -> tuple[str, ...]:
    if challenge != "hook":
        if s.has("hook"):
            raise s.error(
                "hook", f"is only used with challenge = 'hook' (challenge is {challenge!r})"
            )
        return ACMEConfig.hook
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
    return hook


def parse(file: Path, name: str, s: Section, common: CACommon) -> ACMEConfig:
    """A `kind = "acme"` table."""
    directory = (s.get_str("directory", required=True) or "").rstrip("/")
    example = "https://acme-v02.api.letsencrypt.org/directory"
    if s.url_parts("directory", directory, example).scheme != "https":
        raise s.error(
            "directory", f"must be the https:// directory URL of the CA, got {directory!r}"
        )
    challenge = s.get_str("challenge") or ACMEConfig.challenge
    if challenge not in ACME_CHALLENGES:
        raise s.error(
            "challenge", f"must be one of {', '.join(ACME_CHALLENGES)}; got {challenge!r}"
        )
    hook = _hook(s, challenge)
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
    listen_text = s.get_str("http01_listen")
    listen = (
        ACMEConfig.http01_listen
        if listen_text is None
        else host_port(s, "http01_listen", listen_text, ACMEConfig.http01_listen[1])
    )
    config = ACMEConfig(
        name=name,
        directory=directory,
        challenge=challenge,
        email=s.get_str("email"),
        eab_kid=eab_kid,
        eab_hmac=eab_hmac,
        profile=s.get_str("profile"),
        hook=hook,
        hook_timeout=s.get_duration("hook_timeout", ACMEConfig.hook_timeout),
        http01_listen=listen,
        rfc2136=rfc2136,
    )
    return with_common(config, common)


ACME = CAKind("acme", ACMEConfig, parse)
