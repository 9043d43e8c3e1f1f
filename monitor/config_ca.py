"""Parsing of the `[ca.NAME]` tables into one frozen config per CA connector (acme, est, adcs).

The connectors in renewers/ca/ take these dataclasses; this module only validates the file.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from monitor.config_base import Secret, Section, host_problem, key, port_number, toml_keys
from monitor.errors import ConfigError
from monitor.facts import EKU_CONFIG_NAMES

CA_KINDS = ("acme", "est", "adcs", "manual")
ACME_CHALLENGES = ("dns-01", "http-01", "hook")
ADCS_AUTH = ("basic", "ntlm", "kerberos")
EST_OPERATIONS = ("simpleenroll", "simplereenroll")
EST_HTTP_AUTH = ("basic", "digest")
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1")
EKU_NAMES = tuple(EKU_CONFIG_NAMES)  # what `ekus = [...]` accepts
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class CALimits:
    """How hard the renewals of the whole fleet may press one CA (every `[ca.NAME]` kind).

    An order is one certificate request: it starts when a renewal reaches the submit stage and
    ends when its certificate is issued or the renewal ends. Replicas share the counts through
    the database (renewers/calimit.py), so the limits hold for the fleet, not per process.
    """

    orders_per_hour: int = key(
        0,
        "orders this CA may receive in any 60 minutes, summed over every replica and the CLI; a "
        "renewal that would exceed it waits at submit until the oldest order of the hour ages "
        "out (0: no limit)",
        shown="0 (no limit)",
    )
    concurrent_orders: int = key(
        0,
        "orders open at once (submitted, certificate not yet issued); a renewal that would "
        "exceed it waits at submit until one completes (0: no limit)",
        shown="0 (no limit)",
    )

    @property
    def limited(self) -> bool:
        return self.orders_per_hour > 0 or self.concurrent_orders > 0


_COMMON = {"kind", "trust_anchor", "trust_anchors", "timeout"} | toml_keys(CALimits)


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


@dataclass(frozen=True)
class ManualConfig:
    """A CA without automation (a web portal): the operator signs and `provide`s the cert."""

    name: str
    csr_dir: Path | None = None  # None: data_dir/manual/NAME
    chain: Path | None = None  # PEM bundle of the CA chain (intermediates + root)
    poll: timedelta = timedelta(minutes=5)
    ekus: frozenset[str] | None = None
    trust_anchor: Path | None = None
    # Roots this CA issues under, pinned: the only CA certificates trust may be pushed for.
    trust_anchors: Path | None = None
    timeout: timedelta = timedelta(seconds=30)
    limits: CALimits = field(default_factory=CALimits)
    kind: str = "manual"


CAConfig = ACMEConfig | ESTConfig | ADCSConfig | ManualConfig


def _https_url(s: Section, key: str, must_contain: str, example: str) -> str:
    url = (s.get_str(key, required=True) or "").rstrip("/")
    parts = s.url_parts(key, url, example)
    if parts.scheme != "https" or not parts.hostname:
        raise s.error(key, f"must be an https:// URL like {example!r}, got {url!r}")
    if must_contain and must_contain not in parts.path:
        raise s.error(key, f"must include {must_contain!r}, like {example!r}; got {url!r}")
    return url


def _ekus(s: Section) -> frozenset[str] | None:
    value = s.table.get("ekus")
    if value is None:
        return None
    if not isinstance(value, list) or not all(v in EKU_NAMES for v in value):
        raise s.error(
            "ekus",
            f"must list what the CA puts in certificates, from {list(EKU_NAMES)}; got {value!r}",
        )
    return frozenset(value)


def _host_port(s: Section, key: str, value: str, default_port: int) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep or (value.startswith("[") and value.endswith("]")):
        host, port_text = value, str(default_port)
    port = port_number(port_text)
    if port is None or not host:
        raise s.error(key, f"must be 'HOST[:PORT]', got {value!r}")
    host = host.removeprefix("[").removesuffix("]")
    problem = host_problem(host)
    if problem is not None:
        raise s.error(key, f"{problem} in {value!r}")
    return host, port


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
    host, port = _host_port(s, "server", s.get_str("server", required=True) or "", 53)
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


def _acme(file: Path, name: str, s: Section) -> ACMEConfig:
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
    listen = _host_port(s, "http01_listen", s.get_str("http01_listen", "0.0.0.0:80") or "", 80)
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
    )


def _est(file: Path, name: str, s: Section) -> ESTConfig:
    url = _https_url(s, "url", "/.well-known/est", "https://est.example.com/.well-known/est")
    username = s.get_str("username")
    password = s.get_secret("password", file.parent)
    if (username is None) != (password is None):
        raise s.error("password" if password is None else "username", "set both or neither")
    client_cert = s.get_file("client_cert", file.parent)
    client_key = s.get_file("client_key", file.parent)
    if (client_cert is None) != (client_key is None):
        raise s.error("client_key" if client_key is None else "client_cert", "set both or neither")
    if client_key is not None and s.check_files:
        _private_file(s, "client_key", client_key)
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
        ekus=_ekus(s),
        http_auth=http_auth,
    )


def _private_file(s: Section, key: str, path: Path) -> None:
    """A private key file must be readable by the service user only (mode 0600 or 0400)."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise s.error(
            key,
            f"{path} is readable by group or others (mode {mode:04o}); it holds a private key: "
            f"run chmod 600 {path}",
        )


def _adcs(file: Path, name: str, s: Section) -> ADCSConfig:
    url = _https_url(s, "url", "/certsrv", "https://ca.corp.example/certsrv")
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
        ekus=_ekus(s),
    )


_KEYS = {
    "acme": _COMMON
    | {
        "directory", "challenge", "hook", "hook_timeout", "email", "eab_kid", "eab_hmac",
        "profile", "http01_listen", "rfc2136",
    },
    "est": _COMMON
    | {
        "url",
        "username",
        "password",
        "client_cert",
        "client_key",
        "client_key_password",
        "operation",
        "http_auth",
        "ekus",
    },
    "adcs": _COMMON | {"url", "template", "auth", "username", "password", "ekus"},
    "manual": _COMMON | {"csr_dir", "chain", "poll", "ekus"},
}  # fmt: skip


def parse_ca(file: Path, name: str, table: Any, *, check_files: bool = True) -> CAConfig:
    path = f"ca.{name}"
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: {path}: must be a table ([{path}])")
    if not _NAME.match(name):
        raise ConfigError(f"{file}: {path}: CA names are letters, digits, '-', '_' and '.'")
    kind = table.get("kind")
    if kind not in CA_KINDS:
        raise ConfigError(
            f"{file}: {path}.kind: must be one of {', '.join(CA_KINDS)}; got {kind!r}"
        )
    s = Section(file, path, table, _KEYS[kind], check_files=check_files)
    parsed: CAConfig
    if kind == "acme":
        parsed = _acme(file, name, s)
    elif kind == "est":
        parsed = _est(file, name, s)
    elif kind == "manual":
        parsed = _manual(file, name, s)
    else:
        parsed = _adcs(file, name, s)
    return dataclasses.replace(parsed, limits=_limits(s))


def _limits(s: Section) -> CALimits:
    defaults = CALimits()
    return CALimits(
        orders_per_hour=s.get_int(
            "orders_per_hour", defaults.orders_per_hour, minimum=0, maximum=1_000_000
        ),
        concurrent_orders=s.get_int(
            "concurrent_orders", defaults.concurrent_orders, minimum=0, maximum=100_000
        ),
    )


def _manual(file: Path, name: str, s: Section) -> ManualConfig:
    csr_dir = s.get_str("csr_dir")
    return ManualConfig(
        name=name,
        csr_dir=None if csr_dir is None else s.path_of("csr_dir", csr_dir, file.parent),
        chain=s.get_file("chain", file.parent),
        poll=s.get_duration("poll", timedelta(minutes=5)),
        ekus=_ekus(s),
        trust_anchor=s.get_file("trust_anchor", file.parent),
        trust_anchors=s.get_file("trust_anchors", file.parent),
        timeout=s.get_duration("timeout", timedelta(seconds=30)),
    )


def parse_cas(file: Path, table: Any, *, check_files: bool = True) -> Mapping[str, CAConfig]:
    """Validate every `[ca.NAME]` table; returns name -> CA config object."""
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: ca: must be tables like [ca.corp-adcs]")
    return {name: parse_ca(file, name, sub, check_files=check_files) for name, sub in table.items()}


def ca_secrets(ca: CAConfig) -> list[Secret]:
    """Every secret reference of one CA (for `check-config --secrets`)."""
    out: list[Secret | None] = []
    if isinstance(ca, ACMEConfig):
        out = [ca.eab_hmac, ca.rfc2136.tsig_secret if ca.rfc2136 else None]
    elif isinstance(ca, ManualConfig):
        out = []
    else:
        out = [ca.password]
    return [s for s in out if s is not None]
