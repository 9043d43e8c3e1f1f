"""The TOML configuration: load, validate, and explain every mistake by file, key path and fix.

Secrets are written as `env:NAME` or `file:PATH` and held as `Secret`, which never prints its value.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import tomllib
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from expressway_certd.monitor.config_base import (
    PORT_DIGITS,
    Secret,
    Section,
    check_host,
    host_problem,
    key,
    key_from,
    port_number,
    required_key,
    toml_keys,
)
from expressway_certd.monitor.config_ca import CAConfig, CAKind, parse_ca_tables
from expressway_certd.monitor.config_notify import NotifierConfig, parse_notifiers
from expressway_certd.monitor.cron import crontab_trigger
from expressway_certd.monitor.durations import Fraction, parse_duration_or_fraction
from expressway_certd.monitor.endpoint import SERVICE_BY_PORT, STARTTLS_PROTOCOLS, Endpoint
from expressway_certd.monitor.errors import ConfigError
from expressway_certd.monitor.policy import DEFAULT_RENEW_BEFORE

DEFAULT_LISTEN = "127.0.0.1:9464"
DEFAULT_EXPIRY_WINDOWS = (30, 14, 7, 1)


def default_data_dir() -> Path:
    base = os.environ.get("STATE_DIRECTORY")
    if base:
        return Path(base.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "expressway-certd"


def default_state_url() -> str:
    """SQLite under systemd's STATE_DIRECTORY, else the XDG state directory."""
    return f"sqlite+aiosqlite:///{default_data_dir() / 'state.db'}"


APPROVAL_MODES = ("auto", "manual", "manual-if-ca-changed")


@dataclass(frozen=True)
class MaintenanceWindow:
    """When restarts may happen: a cron expression (start) in a time zone, for a duration."""

    cron: str = required_key('5-field cron expression: when a window starts (`"0 2 * * 6"`)')
    timezone: str = key("UTC", "IANA time zone name the cron expression is read in")
    duration: timedelta = key(
        timedelta(hours=2), "how long a window stays open; a restart starts only inside it"
    )


@dataclass(frozen=True)
class RenewalConfig:
    """How one Expressway's certificate is renewed (keys of its `[expressway.renewal]`)."""

    ca: str = required_key("the `[ca.NAME]` that signs this box's CSRs")
    client_ca: str | None = key(
        None,
        "the `[ca.NAME]` that signs the X15.5 client certificate's CSRs (renewal kind "
        "`client`); it must issue TLS Web Client Authentication, so a private CA (`adcs`, "
        "`est`, `manual`): public ACME CAs no longer do. The daemon renews the client "
        "certificate on its own expiry only when this CA (default: `ca`) is not ACME",
        shown="`ca`",
    )
    renew_before: timedelta | Fraction = key(
        DEFAULT_RENEW_BEFORE,
        'a duration (`"30d"`) or a fraction of the lifetime; never less than 14 days',
    )
    approval: str = key(
        "auto",
        "`auto`, `manual` (always wait for `expressway-certd approve`), `manual-if-ca-changed`",
    )
    maintenance_window: MaintenanceWindow | None = key(
        None,
        '`{ cron = "0 2 * * 6", timezone = "Europe/Berlin", duration = "3h" }`: restarts start '
        "only inside the window. A cron expression that never fires (`0 2 30 2 *`) is an error",
        shown="none (restart at once)",
    )
    extra_sans: tuple[str, ...] = key(
        (), "DNS names to add to the SANs copied from the current certificate"
    )
    key_length: int = key(
        4096, "RSA key length of the CSR generated on the box (2048, 3072, 4096, 8192)"
    )
    digest: str = key("sha256", "`sha256`, `sha384` or `sha512`")
    subject: tuple[tuple[str, str], ...] = key(
        (),
        '`{ Country = "CH", Province = "ZH", Locality = "Zurich", Organization = "Example", '
        'OrganizationalUnit = "UC", Email = "pki@example.com" }`; `Country` is a two-letter '
        "ISO 3166 code, the others at most as long as X.520 allows (Province and Locality 128, "
        "Organization and OrganizationalUnit 64, Email 255)",
        shown="none",
    )
    verify_timeout: timedelta = key(
        timedelta(minutes=10),
        "how long the verify stage waits for every endpoint and zone before blocking",
    )
    max_lifetime: timedelta = key(
        timedelta(days=825),
        "validate refuses an issued certificate valid for longer (Apple platforms, where "
        "Jabber and Webex clients reach the Expressway-E over MRA, refuse TLS server "
        'certificates valid for more than 825 days); raise it (`"3650d"`) only on purpose',
    )
    require_eku: bool = key(
        True,
        "validate refuses an issued certificate without an Extended Key Usage extension "
        "(RFC 5280 allows it; FN74362's checks and Apple clients expect the EKUs); `false` "
        "accepts one",
    )

    def ca_for(self, kind: str) -> str:
        """The CA that signs the certificate of renewal kind `kind` ("server"/"client")."""
        return (self.client_ca or self.ca) if kind == "client" else self.ca


@dataclass(frozen=True)
class ExpresswayConfig:
    """One `[[expressway]]` entry: a box, how to reach its API and which TLS ports to watch."""

    name: str = required_key(
        "unique name; the `target` label in metrics and the name the CLI takes"
    )
    address: str = required_key("FQDN or IP of the node; default host of its endpoints")
    role: str | None = required_key(  # "c", "e" or None when unknown
        "`c` (Expressway-C) or `e` (Expressway-E); decides the default endpoints and the EKU rule",
        shown="none",
    )
    endpoints: tuple[Endpoint, ...] = required_key(
        'list of `"host:port"` strings (`"[v6]:port"` for IPv6, or just `"port"` for the '
        "node's address) or tables `{ host, port, service, starttls, sni }`",
        shown="by role, see below",
    )
    cluster: str | None = key(
        None, "the cluster FQDN; must be among the SANs of the node's certificate"
    )
    version: str | None = key(
        None,
        "software version, e.g. `X15.4`; decides whether the server certificate needs the TLS "
        'Web Client Authentication EKU (FN74362). Unknown means "needed"',
    )
    username: str | None = key(
        None, "administrator account of the REST API. Set both `username` and `password` or neither"
    )
    password: Secret | None = key(None, "secret reference: the administrator's password")
    api_port: int = key(443, "HTTPS port of the management API")
    api_ca_file: Path | None = key(
        None, "PEM bundle that verifies the management API's certificate"
    )
    ca_file: Path | None = key(
        None,
        "an extra trust bundle for this node's chains (added to `[daemon] trust_bundle`)",
    )
    ssh_port: int = key(
        22,
        "SSH port of the admin CLI; used only to restart with `xCommand Boot` when the box's "
        "REST API does not offer `/provisioning/restart`",
        group="devices",
    )
    ssh_known_hosts: Path | None = key(
        None,
        "known_hosts file pinning the box's SSH host key; an unknown key is refused, never "
        "accepted blindly",
        shown="`~/.ssh/known_hosts`",
        group="devices",
    )
    traversal_peer: str | None = key(
        None,
        "`name` of the `[[expressway]]` at the other end of this box's traversal zone (the E "
        "for a C, the C for an E); a new CA is pushed there before the new certificate goes "
        "live. Must be another entry, of the other role when both roles are known",
        group="devices",
    )
    unified_cm: str | None = key(
        None,
        "`name` of the `[[unified_cm]]` this Expressway-C has MRA or a secure zone with; its "
        "tomcat-trust and callmanager-trust receive a new CA. Not allowed on an Expressway-E",
        group="devices",
    )
    renewal: RenewalConfig | None = key(
        None,
        "how the certificate is renewed, see [Renewal](#renewal-renewal-in-expressway); without "
        "it the node is monitored only",
        shown="none",
    )


@dataclass(frozen=True)
class UnifiedCMConfig:
    """One `[[unified_cm]]` entry: the Unified CM cluster an Expressway-C talks TLS to."""

    name: str = required_key("unique name, referenced by `unified_cm` above")
    nodes: tuple[str, ...] = required_key(
        "hostname of every node, publisher first; trust stores are per node, so each one is updated"
    )
    username: str = required_key("platform administrator (OS Administration / CLI)")
    password: Secret = required_key("secret reference: the platform administrator's password")
    api_port: int = key(
        443, "HTTPS port of the certmgr REST API (`/platformcom/api/v1/certmgr/...`)"
    )
    soap_port: int = key(
        8443, "HTTPS port of Control Center Services (`/controlcenterservice2/...`)"
    )
    ssh_port: int = key(22, "SSH port of the platform CLI (`utils service restart Cisco Tomcat`)")
    sip_tls_port: int = key(
        5061,
        "SIP over TLS port; the trust map reads the CallManager certificate each node serves "
        "there (the tomcat certificate is read on `soap_port`, where Tomcat serves it)",
    )
    api_ca_file: Path | None = key(
        None, "PEM bundle that verifies the nodes' Tomcat certificates", shown="system roots"
    )
    ssh_known_hosts: Path | None = key(
        None,
        "known_hosts file pinning the nodes' SSH host keys",
        shown="`~/.ssh/known_hosts`",
    )
    trust_stores: tuple[str, ...] = key(
        ("tomcat", "callmanager"),
        "stores that receive a new CA: `tomcat`, `callmanager`, `ipsec`, `capf`, `tvs`",
    )
    restart_services: tuple[str, ...] = key(
        ("Cisco CallManager", "Cisco Tftp", "Cisco Tomcat"),
        "services restarted after a trust change so they read the new store, in the "
        "`ucm-restart` stage (after approval, inside `maintenance_window`), node by node, "
        "Cisco Tomcat last; a service not activated on a node is skipped. Names are "
        "case-sensitive (an unknown name reads as Stopped and is reported). Cisco Tomcat is "
        "restarted over SSH, the others through Control Center Services",
    )
    maintenance_window: MaintenanceWindow | None = key(
        None,
        "`{ cron, timezone, duration }` as in `renewal.maintenance_window`: when this Unified "
        "CM's services may restart. Without it, the renewing Expressway's window applies",
        shown="the Expressway's `renewal.maintenance_window`",
    )


@dataclass(frozen=True)
class DaemonConfig:
    """The `[daemon]` table: where the service listens, keeps state and how often it polls."""

    listen_host: str = key(
        "127.0.0.1",
        "address of `/metrics`, `/healthz`, `/readyz` and `/api/v1/*`; port `0` picks a free port",
        shown=f"`{DEFAULT_LISTEN!r}`".replace("'", '"'),
        name="listen",
    )
    listen_port: int = 9464  # part of `listen`
    state: str = key_from(
        default_state_url,
        "a file path (SQLite) or a URL: `sqlite:///PATH`, `postgresql://user@host/db` (asyncpg, "
        "`pip install 'expressway-certd[postgres]'`; give the password with `PGPASSWORD` or "
        "`.pgpass`, not in the URL). Other databases, and drivers that are not installed or "
        "not asyncio drivers, are errors. The SQLite file is created 0600 in a 0700 directory; "
        "an existing one readable by other users gets a warning at start (with the `chmod`): "
        "it holds the inventory, CSRs and the audit log, not secrets, so monitoring goes on. "
        "A SQLite file serves one daemon: a second `run` on it is refused at start (replicas "
        "share a PostgreSQL database, docs/operations.md)",
        shown="SQLite at `$STATE_DIRECTORY/state.db`, else "
        "`$XDG_STATE_HOME/expressway-certd/state.db`, else "
        "`~/.local/state/expressway-certd/state.db`",
    )
    data_dir: Path = key_from(
        default_data_dir,
        "private files the tool keeps (ACME account keys); it and `data_dir/acme` are created "
        "0700 (missing parents too), an existing one open to others gets a warning. Two daemons "
        "with state files in two directories therefore never share an ACME account; give each "
        "daemon its own directory",
        shown="the directory of the SQLite `state` file when one is given; else the directory "
        "of the default state",
    )
    poll_interval: timedelta = key(
        timedelta(minutes=5), "how often each Expressway's endpoints are probed"
    )
    probe_timeout: timedelta = key(
        timedelta(seconds=10),
        "hard deadline of one probe (connect + STARTTLS + handshake); must be shorter than "
        "`poll_interval`",
    )
    concurrency: int = key(64, "probes in flight at once, across all Expressways")
    jitter: float = key(
        0.1, "random spread of each poll, as a fraction (0 to 0.5) of `poll_interval`"
    )
    expiry_windows: tuple[int, ...] = key(
        DEFAULT_EXPIRY_WINDOWS,
        "days before expiry at which `ExpiryWindowEntered` fires, once per window and certificate",
    )
    history: int = key(
        100,
        "history rows kept per endpoint (a row is written when what the endpoint serves, or its "
        "probe status, changes)",
    )
    audit_retention: timedelta = key(
        timedelta(days=365), "audit log entries older than this are pruned daily"
    )
    trust_bundle: Path | None = key(
        None,
        "PEM bundle of the CAs that sign your Expressway certificates; served chains are "
        "verified against it",
    )
    system_roots: bool = key(False, "also trust the operating system's root store")
    log_level: str = key("info", "`debug`, `info`, `warning`, `error`")
    log_format: str = key("json", "`json` (one JSON object per line on stderr) or `console`")
    api_token: Secret | None = key(
        None,
        "secret reference; the bearer token for `POST /api/v1/renewals/ID/approve`, "
        "`POST /api/v1/renewals/ID/cancel` and `POST /api/v1/targets/NAME/renew`. Without it those calls are refused. An empty value "
        "is an error",
    )
    api_read_token: Secret | None = key(
        None,
        "secret reference; when set, every `GET /api/v1/*` (targets, endpoints, events, "
        "renewals with their CSRs) and the status page `GET /` need `Authorization: Bearer` "
        "with this token or `api_token` (a browser reaches the page through a proxy that adds "
        "the header). `/metrics`, `/healthz` and `/readyz` stay open for Prometheus and load "
        "balancers. A `listen` address that is not loopback without `api_token` or without "
        "`api_read_token` is logged as a warning at start",
    )
    renewal_check: timedelta = key(
        timedelta(seconds=15), "how often waiting and failed renewals are looked at"
    )
    trust_map_interval: timedelta = key(
        timedelta(hours=1),
        "how often the daemon recomputes the trust map (reads each Expressway's trusted CA "
        "list and each Unified CM node's trust stores through their APIs, read-only; the "
        "certificates they present come from the latest probes). Runs only when at least one "
        "`[[expressway]]` has API credentials; `concurrency` / 4 Expressways are read at "
        "once, each gets half this interval (at least 5s, at most 60s) to answer from the "
        "start of its read, an unreachable one leaves its relations unknown",
    )
    client_cert_check: timedelta = key(
        timedelta(hours=1),
        "how often the X15.5 client certificate of each target with `username` and `password` "
        "is read through its REST API (it is never served on a port, so probes cannot see "
        'it); exported with `cert_kind="client"` (docs/metrics.md). At least 1 minute',
    )


@dataclass(frozen=True)
class Config:
    path: Path
    daemon: DaemonConfig
    expressways: tuple[ExpresswayConfig, ...]
    # name -> CA config: each kind's dataclass is declared beside its connector (config_ca.py)
    cas: Mapping[str, CAConfig] = field(default_factory=dict)
    unified_cms: tuple[UnifiedCMConfig, ...] = ()
    notifiers: tuple[NotifierConfig, ...] = ()  # [[notifier]] entries (monitor/config_notify.py)

    def target(self, name: str) -> ExpresswayConfig:
        for exp in self.expressways:
            if exp.name == name:
                return exp
        known = ", ".join(e.name for e in self.expressways) or "none"
        raise ConfigError(f"{self.path}: no [[expressway]] named {name!r} (configured: {known})")

    def secrets(self) -> list[Secret]:
        """Every secret reference in the file (what `check-config` and `run` resolve)."""
        tokens = [self.daemon.api_token, self.daemon.api_read_token]
        return [t for t in tokens if t is not None] + self._device_secrets()

    def _device_secrets(self) -> list[Secret]:
        return (
            [s for ca in self.cas.values() for s in ca.secrets()]
            + [e.password for e in self.expressways if e.password is not None]
            + [u.password for u in self.unified_cms]
            + [s for n in self.notifiers for s in n.secrets()]
        )

    def unified_cm(self, name: str) -> UnifiedCMConfig:
        for ucm in self.unified_cms:
            if ucm.name == name:
                return ucm
        known = ", ".join(u.name for u in self.unified_cms) or "none"
        raise ConfigError(f"{self.path}: no [[unified_cm]] named {name!r} (configured: {known})")


STATE_DIALECTS = ("sqlite", "postgresql")


def _state_url(s: Section, value: str, base_dir: Path) -> str:
    if "://" not in value:
        value = str(s.path_of("state", value, base_dir))
    url = state_url(value, base_dir)
    if "://" in value and url.split("://", 1)[0].split("+", 1)[0] not in STATE_DIALECTS:
        raise s.error(
            "state",
            "must be a file path, 'sqlite:///PATH' or 'postgresql://USER@HOST/DB' "
            f"(the databases the store speaks), got a {url.split('://', 1)[0]!r} URL",
        )
    return url


def state_url(value: str, base_dir: Path) -> str:
    """Accept a SQLAlchemy URL or a plain file path (taken as SQLite)."""
    if "://" in value:
        if value.startswith("sqlite://"):
            value = "sqlite+aiosqlite://" + value[len("sqlite://") :]
        elif value.startswith(("postgresql://", "postgres://")):
            value = "postgresql+asyncpg://" + value.split("://", 1)[1]
        return value
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return f"sqlite+aiosqlite:///{path}"


def _data_dir(s: Section, base: Path, state: str) -> Path:
    """`data_dir` as written; else the directory of a SQLite state file; else the default.

    Two daemons with their own state files must not share an ACME account by surprise, so the
    private files follow the state file rather than a per-user directory elsewhere.
    """
    value = s.get_str("data_dir")
    if value is not None:
        return s.path_of("data_dir", value, base)
    state_file = sqlite_path(state)
    return state_file.parent if state_file is not None else default_data_dir()


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite state URL (None for other databases and in-memory SQLite)."""
    if not (url.startswith("sqlite") and ":///" in url):
        return None
    rest = url.split(":///", 1)[1].split("?", 1)[0]
    return None if rest in ("", ":memory:") else Path(rest)


def _parse_listen(section: Section, value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    port = port_number(port_text, allow_zero=True)  # 0: any free port
    if not sep or port is None:
        raise section.error("listen", f"must be 'HOST:PORT' like {DEFAULT_LISTEN!r}, got {value!r}")
    if host.startswith("[") != host.endswith("]"):
        raise section.error("listen", f"must be 'HOST:PORT' like {DEFAULT_LISTEN!r}, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - operator asked for all
    return check_host(section, "listen", host), port


def _parse_daemon(file: Path, table: Mapping[str, Any], check_files: bool) -> DaemonConfig:
    s = Section(
        file,
        "daemon",
        table,
        toml_keys(DaemonConfig),
        check_files=check_files,
    )  # fmt: skip
    base = file.parent
    host, port = _parse_listen(s, s.get_str("listen") or DEFAULT_LISTEN)
    state = s.get_str("state")
    jitter = s.table.get("jitter", DaemonConfig.jitter)
    if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter <= 0.5:
        raise s.error(
            "jitter", f"must be a fraction of the poll interval, 0 to 0.5, got {jitter!r}"
        )
    windows = s.table.get("expiry_windows", list(DaemonConfig.expiry_windows))
    if (
        not isinstance(windows, list)
        or not windows
        or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in windows)
    ):
        raise s.error("expiry_windows", f"must be a list of positive day counts, got {windows!r}")
    level = (s.get_str("log_level") or DaemonConfig.log_level).lower()
    if level not in ("debug", "info", "warning", "error"):
        raise s.error("log_level", f"must be debug, info, warning or error, got {level!r}")
    fmt = s.get_str("log_format") or DaemonConfig.log_format
    if fmt not in ("json", "console"):
        raise s.error("log_format", f"must be 'json' or 'console', got {fmt!r}")
    poll = s.get_duration("poll_interval", DaemonConfig.poll_interval)
    timeout = s.get_duration("probe_timeout", DaemonConfig.probe_timeout)
    if timeout >= poll:
        raise s.error("probe_timeout", "must be shorter than poll_interval")
    url = _state_url(s, state, base) if state else default_state_url()
    return DaemonConfig(
        listen_host=host,
        listen_port=port,
        state=url,
        data_dir=_data_dir(s, base, url),
        poll_interval=poll,
        probe_timeout=timeout,
        concurrency=s.get_int("concurrency", DaemonConfig.concurrency, maximum=4096),
        jitter=float(jitter),
        expiry_windows=tuple(sorted(set(windows), reverse=True)),
        history=s.get_int("history", DaemonConfig.history, maximum=100_000),
        audit_retention=s.get_duration("audit_retention", DaemonConfig.audit_retention),
        trust_bundle=s.get_file("trust_bundle", base),
        system_roots=s.get_bool("system_roots", DaemonConfig.system_roots),
        log_level=level,
        log_format=fmt,
        api_token=s.get_secret("api_token", base),
        api_read_token=s.get_secret("api_read_token", base),
        renewal_check=s.get_duration("renewal_check", DaemonConfig.renewal_check),
        trust_map_interval=s.get_duration("trust_map_interval", DaemonConfig.trust_map_interval),
        client_cert_check=s.get_duration(
            "client_cert_check", DaemonConfig.client_cert_check, minimum=timedelta(minutes=1)
        ),
    )


def default_endpoints(address: str, role: str | None) -> tuple[Endpoint, ...]:
    """The TLS ports of a role (C: 443, 5061; E adds 7001, 8443, 5222 STARTTLS)."""
    ports: list[tuple[int, str | None]] = [(443, None), (5061, None)]
    if role != "c":
        ports += [(7001, None), (8443, None), (5222, "xmpp")]
    if role is None:
        ports = [(443, None), (5061, None)]  # unknown role: only what both roles serve
    return tuple(Endpoint(address, port, SERVICE_BY_PORT[port], tls) for port, tls in ports)


def _parse_host_port(s: Section, key: str, text: str, default_host: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":") or ":" not in host:
            raise s.error(key, f"must be '[IPv6]:port', got {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif PORT_DIGITS.match(text):
        host, port_text = default_host, text
    else:
        raise s.error(key, f"must be 'host:port' (IPv6 as '[addr]:port'), got {text!r}")
    port = port_number(port_text)
    if port is None:
        raise s.error(key, f"port must be 1-65535 in {text!r}")
    host = host or default_host
    problem = host_problem(host)
    if problem is not None:
        raise s.error(key, f"{problem} in {text!r}")
    return host, port


def _parse_endpoint(file: Path, path: str, item: Any, address: str) -> Endpoint:
    if isinstance(item, str):
        s = Section(file, path, {}, set())
        host, port = _parse_host_port(s, "", item, address)
        starttls = "xmpp" if port == 5222 else None
        return Endpoint(host, port, SERVICE_BY_PORT.get(port, f"tls-{port}"), starttls)
    if not isinstance(item, dict):
        raise ConfigError(f"{file}: {path}: must be 'host:port' or a table, got {item!r}")
    s = Section(file, path, item, {"host", "port", "service", "starttls", "sni"})
    if not s.has("port"):
        raise s.error("port", "is required")
    port = s.get_int("port", 0, minimum=1, maximum=65535)
    starttls = s.get_str("starttls")
    if starttls is not None and starttls not in STARTTLS_PROTOCOLS:
        raise s.error("starttls", f"supported: {', '.join(STARTTLS_PROTOCOLS)}; got {starttls!r}")
    if s.has("starttls") is False and port == 5222:
        starttls = "xmpp"
    sni = s.get_str("sni")
    return Endpoint(
        host=check_host(s, "host", s.get_str("host", address) or address),
        port=port,
        service=s.get_str("service", SERVICE_BY_PORT.get(port, f"tls-{port}")) or "",
        starttls=starttls,
        sni=None if sni is None else check_host(s, "sni", sni, ip=False),
    )


def _parse_expressway(file: Path, index: int, table: Any, check_files: bool) -> ExpresswayConfig:
    path = f"expressway[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: {path}: must be a table ([[expressway]])")
    s = Section(
        file,
        path,
        table,
        toml_keys(ExpresswayConfig),
        check_files=check_files,
    )  # fmt: skip
    name = s.get_str("name", required=True) or ""
    s.path = f"expressway[{index}] ({name})"
    address = check_host(s, "address", s.get_str("address", required=True) or "")
    role = s.get_str("role")
    if role is not None:
        role = role.lower()
        if role not in ("c", "e"):
            raise s.error("role", f"must be 'c' (Expressway-C) or 'e' (Expressway-E), got {role!r}")
    version = s.get_str("version")
    if version is not None and not version.upper().startswith(("X", "V")):
        raise s.error("version", f"must look like 'X15.4', got {version!r}")
    raw_endpoints = table.get("endpoints")
    if raw_endpoints is None:
        endpoints = default_endpoints(address, role)
    else:
        if not isinstance(raw_endpoints, list) or not raw_endpoints:
            raise s.error("endpoints", "must be a non-empty list of 'host:port' or tables")
        endpoints = tuple(
            _parse_endpoint(file, f"{s.path}.endpoints[{i}]", item, address)
            for i, item in enumerate(raw_endpoints)
        )
    seen: set[tuple[str, int]] = set()
    for ep in endpoints:
        if (ep.host, ep.port) in seen:
            raise s.error("endpoints", f"{ep.address} is listed twice")
        seen.add((ep.host, ep.port))
    username = s.get_str("username")
    password = s.get_secret("password", file.parent)
    if (username is None) != (password is None):
        raise s.error("password" if password is None else "username", "set both or neither")
    return ExpresswayConfig(
        name=name,
        address=address,
        role=role,
        endpoints=endpoints,
        cluster=_optional_host(s, "cluster"),
        version=version.upper() if version else None,
        username=username,
        password=password,
        api_port=s.get_int("api_port", ExpresswayConfig.api_port, maximum=65535),
        api_ca_file=s.get_file("api_ca_file", file.parent),
        ca_file=s.get_file("ca_file", file.parent),
        ssh_port=s.get_int("ssh_port", ExpresswayConfig.ssh_port, maximum=65535),
        ssh_known_hosts=_known_hosts(s, file.parent),
        traversal_peer=s.get_str("traversal_peer"),
        unified_cm=s.get_str("unified_cm"),
        renewal=_parse_renewal(s, table.get("renewal"), check_files),
    )


def _optional_host(s: Section, key: str) -> str | None:
    value = s.get_str(key)
    return None if value is None else check_host(s, key, value, ip=False)


# CSR subject field -> longest value X.520/RFC 5280 allow (ub-* upper bounds).
CSR_SUBJECT_KEYS = (
    "Country",
    "Province",
    "Locality",
    "Organization",
    "OrganizationalUnit",
    "Email",
)
_SUBJECT_MAX = {"Province": 128, "Locality": 128, "Organization": 64,
                "OrganizationalUnit": 64, "Email": 255}  # fmt: skip
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")


def _subject(s: Section, value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not all(
        k in CSR_SUBJECT_KEYS and isinstance(v, str) for k, v in value.items()
    ):
        raise s.error(
            "subject", f"must be a table with string values for {', '.join(CSR_SUBJECT_KEYS)}"
        )
    out: list[tuple[str, str]] = []
    for field_name, raw in sorted(value.items()):
        text = raw.strip()
        if field_name == "Country":
            if not _COUNTRY.match(text):
                raise s.error(
                    "subject.Country",
                    f"must be a two-letter ISO 3166 code like 'CH' or 'US', got {text!r}",
                )
        elif not 0 < len(text) <= _SUBJECT_MAX[field_name]:
            raise s.error(
                f"subject.{field_name}",
                f"must be 1 to {_SUBJECT_MAX[field_name]} characters, got {len(text)}",
            )
        out.append((field_name, text.upper() if field_name == "Country" else text))
    return tuple(out)


def _parse_renewal(parent: Section, table: Any, check_files: bool) -> RenewalConfig | None:
    if table is None:
        return None
    if not isinstance(table, dict):
        raise parent.error("renewal", "must be a table: [expressway.renewal] after the entry")
    s = Section(
        parent.file,
        f"{parent.path}.renewal",
        table,
        toml_keys(RenewalConfig),
        check_files=check_files,
    )  # fmt: skip
    ca = s.get_str("ca", required=True) or ""
    renew_before: timedelta | Fraction = DEFAULT_RENEW_BEFORE
    if s.has("renew_before"):
        try:
            renew_before = parse_duration_or_fraction(table["renew_before"])
        except ValueError as exc:
            raise s.error("renew_before", f"{exc}; e.g. '30d' or '1/3' (of the lifetime)") from exc
    approval = s.get_str("approval") or RenewalConfig.approval
    if approval not in APPROVAL_MODES:
        raise s.error("approval", f"must be one of {', '.join(APPROVAL_MODES)}, got {approval!r}")
    extra = table.get("extra_sans", [])
    if not isinstance(extra, list) or not all(isinstance(x, str) and x for x in extra):
        raise s.error("extra_sans", "must be a list of DNS names")
    for name in extra:
        check_host(s, "extra_sans", name, ip=False)
    key_length = s.get_int("key_length", RenewalConfig.key_length, minimum=2048, maximum=8192)
    if key_length not in (2048, 3072, 4096, 8192):
        raise s.error("key_length", f"must be 2048, 3072, 4096 or 8192, got {key_length}")
    digest = (s.get_str("digest") or RenewalConfig.digest).lower()
    if digest not in ("sha256", "sha384", "sha512"):
        raise s.error(
            "digest", f"must be sha256, sha384 or sha512 (SHA-1 is not offered), got {digest!r}"
        )
    subject = _subject(s, table.get("subject", {}))
    return RenewalConfig(
        ca=ca,
        renew_before=renew_before,
        approval=approval,
        maintenance_window=_parse_window(s, table.get("maintenance_window")),
        extra_sans=tuple(x.lower() for x in extra),
        key_length=key_length,
        digest=digest,
        subject=subject,
        verify_timeout=s.get_duration("verify_timeout", RenewalConfig.verify_timeout),
        max_lifetime=s.get_duration("max_lifetime", RenewalConfig.max_lifetime),
        require_eku=s.get_bool("require_eku", RenewalConfig.require_eku),
        client_ca=s.get_str("client_ca"),
    )


def _parse_window(parent: Section, table: Any) -> MaintenanceWindow | None:
    if table is None:
        return None
    if not isinstance(table, dict):
        raise parent.error(
            "maintenance_window", "must be a table like { cron = '0 2 * * 6', timezone = 'UTC' }"
        )
    s = Section(
        parent.file, f"{parent.path}.maintenance_window", table, toml_keys(MaintenanceWindow)
    )
    cron = s.get_str("cron", required=True) or ""
    tz = s.get_str("timezone") or MaintenanceWindow.timezone
    try:
        zone = ZoneInfo(tz)
    except (KeyError, ValueError, OSError) as exc:  # OSError: a directory or unreadable file
        raise s.error(
            "timezone", f"unknown time zone {tz!r}; use an IANA name like 'Europe/Berlin'"
        ) from exc
    try:
        trigger = crontab_trigger(cron, tz)
        first = trigger.get_next_fire_time(None, datetime.now(UTC).astimezone(zone))
    except (ValueError, TypeError, OverflowError) as exc:
        raise s.error("cron", f"not a 5-field cron expression ({exc}); e.g. '0 2 * * 6'") from exc
    if first is None:
        raise s.error(
            "cron", f"{cron!r} never fires (no such date); e.g. '0 2 * * 6' for Saturdays 02:00"
        )
    return MaintenanceWindow(cron, tz, s.get_duration("duration", MaintenanceWindow.duration))


def _known_hosts(s: Section, base_dir: Path) -> Path | None:
    value = s.get_str("ssh_known_hosts")
    if value is None:
        return None
    path = s.path_of("ssh_known_hosts", value, base_dir)
    if s.check_files and not path.is_file():
        raise s.error(
            "ssh_known_hosts",
            f"file {path} does not exist; write the device's host key line there "
            "(ssh-keyscan, after checking the fingerprint on its console)",
        )
    return path


def _str_list(s: Section, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = s.table.get(key, list(default))
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v.strip() for v in value)
    ):
        raise s.error(key, f"must be a non-empty list of strings, got {value!r}")
    return tuple(v.strip() for v in value)


UCM_TRUST_STORES = ("tomcat", "callmanager", "ipsec", "capf", "tvs")


def _parse_unified_cm(file: Path, index: int, table: Any, check_files: bool) -> UnifiedCMConfig:
    path = f"unified_cm[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: {path}: must be a table ([[unified_cm]])")
    s = Section(
        file,
        path,
        table,
        toml_keys(UnifiedCMConfig),
        check_files=check_files,
    )  # fmt: skip
    name = s.get_str("name", required=True) or ""
    s.path = f"unified_cm[{index}] ({name})"
    if "nodes" not in table:
        raise s.error("nodes", "is required: list every node's hostname, publisher first")
    nodes = _str_list(s, "nodes", ())
    for node in nodes:
        check_host(s, "nodes", node)
    stores = _str_list(s, "trust_stores", UnifiedCMConfig.trust_stores)
    for store in stores:
        if store not in UCM_TRUST_STORES:
            raise s.error(
                "trust_stores", f"unknown store {store!r}; one of {', '.join(UCM_TRUST_STORES)}"
            )
    password = s.get_secret("password", file.parent)
    if password is None:
        raise s.error("password", "is required: 'env:NAME' or 'file:PATH'")
    return UnifiedCMConfig(
        name=name,
        nodes=nodes,
        username=s.get_str("username", required=True) or "",
        password=password,
        api_port=s.get_int("api_port", UnifiedCMConfig.api_port, maximum=65535),
        soap_port=s.get_int("soap_port", UnifiedCMConfig.soap_port, maximum=65535),
        ssh_port=s.get_int("ssh_port", UnifiedCMConfig.ssh_port, maximum=65535),
        sip_tls_port=s.get_int("sip_tls_port", UnifiedCMConfig.sip_tls_port, maximum=65535),
        api_ca_file=s.get_file("api_ca_file", file.parent),
        ssh_known_hosts=_known_hosts(s, file.parent),
        trust_stores=stores,
        restart_services=_str_list(s, "restart_services", UnifiedCMConfig.restart_services),
        maintenance_window=_parse_window(s, table.get("maintenance_window")),
    )


def _check_links(
    file: Path, expressways: tuple[ExpresswayConfig, ...], ucms: tuple[UnifiedCMConfig, ...]
) -> None:
    by_name = {e.name: e for e in expressways}
    ucm_names = {u.name for u in ucms}
    for i, exp in enumerate(expressways):
        where = f"{file}: expressway[{i}] ({exp.name})"
        peer_name = exp.traversal_peer
        if peer_name is not None:
            peer = by_name.get(peer_name)
            if peer is None or peer is exp:
                known = ", ".join(n for n in by_name if n != exp.name) or "none"
                raise ConfigError(
                    f"{where}.traversal_peer: {peer_name!r} is not another [[expressway]] "
                    f"(configured: {known})"
                )
            if exp.role and peer.role and exp.role == peer.role:
                raise ConfigError(
                    f"{where}.traversal_peer: {peer_name!r} has the same role "
                    f"({exp.role.upper()}); a traversal zone links an Expressway-C and an "
                    "Expressway-E"
                )
        if exp.unified_cm is not None:
            if exp.unified_cm not in ucm_names:
                raise ConfigError(
                    f"{where}.unified_cm: no [[unified_cm]] named {exp.unified_cm!r} "
                    f"(configured: {', '.join(sorted(ucm_names)) or 'none'})"
                )
            if exp.role == "e":
                raise ConfigError(
                    f"{where}.unified_cm: only an Expressway-C talks to Unified CM; "
                    "set it on the Expressway-C entry"
                )


KNOWN_TOP_LEVEL = {"daemon", "expressway", "ca", "unified_cm", "notifier"}


MAX_DEPTH = 16  # deeper than any key of this file goes; deeper input is refused, not walked


def _check_tree(file: Path, data: Mapping[str, Any]) -> None:
    """Refuse control characters in any key or string, and nesting deeper than MAX_DEPTH.

    Done once over the whole document (iteratively, so depth cannot exhaust the stack) so
    that no name, host or path with a NUL or an escape sequence reaches logs or devices.
    """
    stack: list[tuple[str, Any, int]] = [("", data, 0)]
    while stack:
        path, value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(f"{file}: {path}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, str):
            bad = next((c for c in value if unicodedata.category(c) == "Cc"), None)
            if bad is not None:
                raise ConfigError(
                    f"{file}: {path}: contains the control character U+{ord(bad):04X}; "
                    "remove it (write the value on one line, without escapes like \\u0000)"
                )
        elif isinstance(value, dict):
            for key, item in value.items():
                if any(unicodedata.category(c) == "Cc" for c in key):
                    raise ConfigError(
                        f"{file}: {path or '(top level)'}: a key contains a control character "
                        f"({key.encode('unicode_escape').decode('ascii')[:60]}); remove it"
                    )
                stack.append((f"{path}.{key}" if path else key, item, depth + 1))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item, depth + 1) for i, item in enumerate(value))


def parse_config_with(
    file: Path,
    data: Mapping[str, Any],
    *,
    ca_kinds: Sequence[CAKind],
    check_files: bool = True,
) -> Config:
    """Validate an already parsed TOML document."""
    _check_tree(file, data)
    s = Section(file, "", data, KNOWN_TOP_LEVEL)
    daemon_table = data.get("daemon", {})
    if not isinstance(daemon_table, dict):
        raise s.error("daemon", "must be a table ([daemon])")
    raw = data.get("expressway", [])
    if not isinstance(raw, list):
        raise s.error("expressway", "must be an array of tables: write [[expressway]]")
    expressways = tuple(_parse_expressway(file, i, t, check_files) for i, t in enumerate(raw))
    names = [e.name for e in expressways]
    for name in names:
        if names.count(name) > 1:
            raise s.error("expressway", f"name {name!r} is used twice; names must be unique")
    raw_ucm = data.get("unified_cm", [])
    if not isinstance(raw_ucm, list):
        raise s.error("unified_cm", "must be an array of tables: write [[unified_cm]]")
    unified_cms = tuple(_parse_unified_cm(file, i, t, check_files) for i, t in enumerate(raw_ucm))
    ucm_names = [u.name for u in unified_cms]
    for name in ucm_names:
        if ucm_names.count(name) > 1:
            raise s.error("unified_cm", f"name {name!r} is used twice; names must be unique")
    _check_links(file, expressways, unified_cms)
    daemon = _parse_daemon(file, daemon_table, check_files)
    cas = parse_ca_tables(file, data.get("ca", {}), ca_kinds, check_files=check_files)
    for i, exp in enumerate(expressways):
        if exp.renewal is not None and exp.renewal.ca not in cas:
            known = ", ".join(sorted(cas)) or "none"
            raise ConfigError(
                f"{file}: expressway[{i}] ({exp.name}).renewal.ca: no [ca.{exp.renewal.ca}] "
                f"table (configured CAs: {known}); add it or fix the name"
            )
        client_ca = exp.renewal.client_ca if exp.renewal is not None else None
        if client_ca is not None and client_ca not in cas:
            known = ", ".join(sorted(cas)) or "none"
            raise ConfigError(
                f"{file}: expressway[{i}] ({exp.name}).renewal.client_ca: no [ca.{client_ca}] "
                f"table (configured CAs: {known}); add it or fix the name"
            )
    return Config(
        path=file,
        daemon=daemon,
        expressways=expressways,
        cas=cas,
        unified_cms=unified_cms,
        notifiers=parse_notifiers(file, data.get("notifier", []), check_files=check_files),
    )


def load_config_with(
    path: str | Path, *, ca_kinds: Sequence[CAKind], check_files: bool = True
) -> Config:
    """Read and validate a config file; ConfigError explains any problem. `ca_kinds`: the
    `[ca.NAME]` kinds known, from the composition root (expressway_certd/config.py, whose
    `load_config` every caller uses).

    `check_files=False` skips the existence checks of referenced files (for linting examples).
    """
    try:
        file = Path(path).expanduser().resolve()
    except RuntimeError as exc:  # ~user of a user that does not exist
        raise ConfigError(f"{path}: cannot expand the config file's path: {exc}") from exc
    try:
        text = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config file: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: TOML syntax error: {exc}") from exc
    except RecursionError:
        raise ConfigError(
            f"{file}: arrays or tables nested too deeply to read; "
            f"this file needs at most {MAX_DEPTH} levels"
        ) from None
    return parse_config_with(file, data, ca_kinds=ca_kinds, check_files=check_files)


def check_runtime(config: Config) -> None:
    """What `check-config` and `run` both verify beyond the file: secrets and the database driver.

    Every secret reference is read (values are never shown) and the state database's driver is
    imported; ConfigError lists every problem at once, so `run` refuses to start on exactly what
    `check-config` reports.
    """
    problems: list[str] = []
    for secret in config.secrets():
        try:
            secret.reveal()
        except ConfigError as exc:
            problems.append(str(exc))
    problem = state_driver_problem(config.daemon.state)
    if problem is not None:
        problems.append(f"daemon.state: {problem}")
    if problems:
        raise ConfigError(f"{config.path}: " + f"\n{config.path}: ".join(problems))


def state_driver_problem(url: str) -> str | None:
    """Why the store could not open `url` (unknown database, driver missing, not asyncio)."""
    scheme = url.split("://", 1)[0]
    hint = "use 'sqlite:///PATH' or 'postgresql://USER@HOST/DB'"
    if scheme.startswith("postgresql"):
        hint = (
            "use 'postgresql://USER@HOST/DB', whose driver (asyncpg) comes with: "
            "pip install 'expressway-certd[postgres]'"
        )
    try:
        # The dialect create_async_engine would pick (psycopg has a sync and an async one).
        dialect = make_url(url).get_dialect(_is_async=True)
    except (ArgumentError, NoSuchModuleError, ValueError):
        return f"SQLAlchemy has no database driver {scheme!r}; {hint}"
    if not dialect.is_async:
        return f"driver {scheme!r} is not an asyncio driver; {hint}"
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        return f"the Python module {exc.name or scheme!r} of driver {scheme!r} is not installed; {hint}"
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def startup_warnings(config: Config) -> list[str]:
    """Exposures `run` logs as warnings when it starts (the daemon still starts)."""
    d = config.daemon
    out: list[str] = []
    if not _is_loopback(d.listen_host):
        if d.api_token is None:
            out.append(
                f"daemon.listen: {d.listen_host}:{d.listen_port} is reachable from other "
                "hosts and no api_token is set: approve and renew over the API are refused, "
                "set [daemon] api_token to allow them only with a bearer token"
            )
        if d.api_read_token is None:
            out.append(
                f"daemon.listen: {d.listen_host}:{d.listen_port} is reachable from other "
                "hosts and /api/v1/* (inventory, events, CSRs) needs no token; "
                "set [daemon] api_read_token, or listen on 127.0.0.1 behind a proxy"
            )
    state_file = sqlite_path(d.state)
    if state_file is not None:
        try:
            mode = stat.S_IMODE(state_file.stat().st_mode)
        except OSError:
            mode = 0
        if mode & stat.S_IRWXO:
            out.append(
                f"daemon.state: {state_file} is readable by other users (mode {mode:04o}); "
                f"it holds the inventory, CSRs and the audit log; run: chmod 600 {state_file}"
            )
    return out


def make_private_dir(path: Path) -> None:
    """Create `path` and each missing parent 0700 (`mkdir(parents=True)` would make them 0755)."""
    missing: list[Path] = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)


def ensure_private_dirs(data_dir: Path) -> list[str]:
    """Create `data_dir` and `data_dir/acme` 0700; warnings for existing ones open to others."""
    out: list[str] = []
    for path in (data_dir, data_dir / "acme"):
        try:
            make_private_dir(path)
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError as exc:
            raise ConfigError(
                f"daemon.data_dir: cannot create {path}: {exc.strerror}; "
                "set [daemon] data_dir to a directory the service user may write"
            ) from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            out.append(
                f"daemon.data_dir: {path} is open to other users (mode {mode:04o}); "
                f"it holds private keys; run: chmod 700 {path}"
            )
    return out
