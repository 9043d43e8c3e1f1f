"""The `[ca.NAME]` tables: what every CA kind has in common, and the registry of kinds.

Each kind's own section (its config dataclass, its keys and their checks) is declared beside
its connector, in renewers/ca/<kind>_config.py, as a `CAKind`. The composition root
assembles the registry (expressway_certd/config.py, from renewers/ca/kinds.py) and gives it
to the loader (`monitor.config.load_config_with(..., ca_kinds=...)`), so the monitoring core never
imports the renewal side. This module holds what is common to every kind: the keys every table
takes (`CACommon`, which each kind's dataclass inherits, and `CALimits`), the `CAConfig`
Protocol the rest of the core reads, the checks several kinds share, and `parse_ca_tables`,
which checks the name and the `kind`, parses the common keys and hands the table to its kind.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from expressway_certd.monitor.config_base import (
    Secret,
    Section,
    host_problem,
    key,
    port_number,
    toml_keys,
)
from expressway_certd.monitor.errors import ConfigError
from expressway_certd.monitor.facts import EKU_CONFIG_NAMES

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


@dataclass(frozen=True, kw_only=True)
class CACommon:
    """The keys every kind's table takes (besides `kind` and the limits), declared once: each
    kind's config dataclass inherits them, `parse_ca_table` parses them before handing the table
    to the kind, and the docs show them in one table. Keyword-only, so that a kind's dataclass
    declares its own required fields first."""

    trust_anchor: Path | None = key(
        None, "PEM file verifying the CA's own HTTPS server", shown="system roots"
    )
    trust_anchors: Path | None = key(
        None,
        "PEM file of the root(s) this CA issues under. A new CA certificate is pushed to trust "
        "stores (the Expressways, Unified CM) only when the new certificate chains to one of "
        "these roots, or to a root in the CA's `chain` (kind `manual`) or `trust_anchor` file; "
        "without any pinned root, a renewal whose CA changes blocks at validate with `set "
        "[ca.NAME] trust_anchors`. Chains handed in at run time (`provide --chain`, the CA's "
        "answer) never count as anchors",
    )
    timeout: timedelta = key(timedelta(seconds=30), "per request")
    # Not a key: its keys are CALimits's, written in the same table.
    limits: CALimits = field(default_factory=CALimits)


COMMON_KEYS = frozenset({"kind"} | toml_keys(CACommon) | toml_keys(CALimits))


class CAConfig(Protocol):
    """What the core knows of any `[ca.NAME]` (each kind's dataclass has these fields)."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def trust_anchor(self) -> Path | None: ...  # verifies the CA's own HTTPS server

    @property
    def trust_anchors(self) -> Path | None: ...  # roots this CA issues under, pinned

    @property
    def timeout(self) -> timedelta: ...

    @property
    def limits(self) -> CALimits: ...

    def secrets(self) -> tuple[Secret, ...]:
        """Every secret reference of this CA (for `check-config --secrets` and `run`)."""
        ...


@dataclass(frozen=True)
class CAKind:
    """One kind of `[ca.NAME]` table (`kind = NAME`), declared beside its connector: `config`
    is its dataclass (a `CACommon`), whose declared fields are the keys its table takes and
    their docs; `parse` builds that config from the table (a Section that has refused unknown
    keys already) and the common keys, parsed (`with_common` puts them in)."""

    name: str
    config: type[CACommon]
    parse: Callable[[Path, str, Section, CACommon], CAConfig]

    @property
    def keys(self) -> frozenset[str]:
        """The keys the kind's table takes besides COMMON_KEYS (from its declarations)."""
        return frozenset(toml_keys(self.config)) - COMMON_KEYS


C = TypeVar("C", bound=CACommon)


def with_common(config: C, common: CACommon) -> C:
    """`config` holding the common keys as parsed (every field `CACommon` declares)."""
    values = {f.name: getattr(common, f.name) for f in dataclasses.fields(CACommon)}
    return dataclasses.replace(config, **values)


def https_url(s: Section, key: str, must_contain: str, example: str) -> str:
    url = (s.get_str(key, required=True) or "").rstrip("/")
    parts = s.url_parts(key, url, example)
    if parts.scheme != "https" or not parts.hostname:
        raise s.error(key, f"must be an https:// URL like {example!r}, got {url!r}")
    if must_contain and must_contain not in parts.path:
        raise s.error(key, f"must include {must_contain!r}, like {example!r}; got {url!r}")
    return url


def ekus_key() -> frozenset[str] | None:
    """The `ekus` key of the kinds that take it (declared here once, read by `ekus_of`)."""
    return key(
        None,
        "what the CA puts in the certificates it issues, a list of names from "
        f"{', '.join(f'`{name}`' for name in EKU_CONFIG_NAMES)}; "
        "declared, the plan and preflight tell before submitting whether the CA fits the box's "
        "role",
        shown="none (unknown until issued)",
    )


def ekus_of(s: Section) -> frozenset[str] | None:
    """`ekus`: what the CA puts in certificates, by config name (serverAuth, clientAuth)."""
    value = s.table.get("ekus")
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(v, str) and v in EKU_CONFIG_NAMES for v in value
    ):
        raise s.error(
            "ekus",
            f"must list what the CA puts in certificates, from {list(EKU_CONFIG_NAMES)}; got {value!r}",
        )
    return frozenset(value)


def host_port(s: Section, key: str, value: str, default_port: int) -> tuple[str, int]:
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


def private_file(s: Section, key: str, path: Path) -> None:
    """A private key file must be readable by the service user only (mode 0600 or 0400)."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise s.error(
            key,
            f"{path} is readable by group or others (mode {mode:04o}); it holds a private key: "
            f"run chmod 600 {path}",
        )


def parse_ca_table(
    file: Path, name: str, table: Any, kinds: Sequence[CAKind], *, check_files: bool = True
) -> CAConfig:
    path = f"ca.{name}"
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: {path}: must be a table ([{path}])")
    if not _NAME.match(name):
        raise ConfigError(f"{file}: {path}: CA names are letters, digits, '-', '_' and '.'")
    by_name = {k.name: k for k in kinds}
    written = table.get("kind")
    kind = by_name.get(written) if isinstance(written, str) else None
    if kind is None:
        raise ConfigError(
            f"{file}: {path}.kind: must be one of {', '.join(by_name)}; got {written!r}"
        )
    s = Section(file, path, table, set(COMMON_KEYS | kind.keys), check_files=check_files)
    return kind.parse(file, name, s, _common(file, s))


def _common(file: Path, s: Section) -> CACommon:
    return CACommon(
        trust_anchor=s.get_file("trust_anchor", file.parent),
        trust_anchors=s.get_file("trust_anchors", file.parent),
        timeout=s.get_duration("timeout", CACommon.timeout),
        limits=CALimits(
            orders_per_hour=s.get_int(
                "orders_per_hour", CALimits.orders_per_hour, minimum=0, maximum=1_000_000
            ),
            concurrent_orders=s.get_int(
                "concurrent_orders", CALimits.concurrent_orders, minimum=0, maximum=100_000
            ),
        ),
    )


def parse_ca_tables(
    file: Path, table: Any, kinds: Sequence[CAKind], *, check_files: bool = True
) -> Mapping[str, CAConfig]:
    """Validate every `[ca.NAME]` table with the kinds given; returns name -> CA config."""
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: ca: must be tables like [ca.corp-adcs]")
    return {
        name: parse_ca_table(file, name, sub, kinds, check_files=check_files)
        for name, sub in table.items()
    }
