"""The key tables of docs/configuration.md, generated from the config declarations: how a
declared field becomes a row, the tables of the monitor's own sections (`SECTIONS`), and
`render`, which rewrites every table between `<!-- keys: NAME -->` and `<!-- end keys -->`.

The CA kinds' tables come from the registry the composition root holds, so the command that
writes the file lives there: `python -m expressway_certd.config_docs docs/configuration.md`
(expressway_certd/config_docs.py); a test fails when the committed file is stale.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from expressway_certd.monitor.config import (
    DaemonConfig,
    ExpresswayConfig,
    MaintenanceWindow,
    RenewalConfig,
    UnifiedCMConfig,
)
from expressway_certd.monitor.config_base import declared
from expressway_certd.monitor.config_ca import CALimits
from expressway_certd.monitor.config_notify import (
    AlertmanagerConfig,
    EmailConfig,
    NotifierIdentity,
    Routing,
    WebexConfig,
    WebhookConfig,
)
from expressway_certd.monitor.durations import Fraction

# Marker name -> (declaring classes, group of their fields that the table shows).
SECTIONS: dict[str, tuple[tuple[Any, ...], str]] = {
    "daemon": ((DaemonConfig,), ""),
    "expressway": ((ExpresswayConfig,), ""),
    "expressway-devices": ((ExpresswayConfig,), "devices"),
    "unified_cm": ((UnifiedCMConfig,), ""),
    "renewal": ((RenewalConfig,), ""),
    "maintenance-window": ((MaintenanceWindow,), ""),
    "ca-limits": ((CALimits,), ""),
    "notifier": ((NotifierIdentity, Routing), ""),
    "notifier-alertmanager": ((AlertmanagerConfig,), ""),
    "notifier-webex": ((WebexConfig,), ""),
    "notifier-webhook": ((WebhookConfig,), ""),
    "notifier-email": ((EmailConfig,), ""),
}
_BLOCK = re.compile(r"(<!-- keys: ([\w-]+) -->\n)(.*?)(<!-- end keys -->)", re.DOTALL)


def toml_literal(value: object) -> str:
    """A default as it would be written in the file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Fraction):
        return f'"{value}"'
    if isinstance(value, timedelta):
        return f'"{compact_duration(value)}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def compact_duration(delta: timedelta) -> str:
    """The largest whole unit: 365 days -> "365d", 600 s -> "10m" (one day stays "24h")."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds > (86400 if unit == "d" else 0):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def shown_default(f: dataclasses.Field[Any]) -> str:
    if f.metadata["shown"]:
        return str(f.metadata["shown"])
    if f.default is None:
        return "none"
    return f"`{toml_literal(f.default)}`"


def row(f: dataclasses.Field[Any]) -> str:
    """One declared field as a row of a key table."""
    name = f.metadata["key"] or f.name
    cells = (f"`{name}`", shown_default(f), f.metadata["doc"])
    if any("|" in cell for cell in cells):
        raise ValueError(f"{f.name}: a '|' in its doc or default would split the table row")
    return f"| {cells[0]} | {cells[1]} | {cells[2]} |"


HEADER = ["| key | default | meaning |", "|---|---|---|"]


def table(
    classes: tuple[Any, ...],
    group: str = "",
    *,
    skip: frozenset[str] = frozenset(),
    first: tuple[str, ...] = (),
) -> str:
    """The key table of `classes`' declared fields of `group`: `first` rows on top, the keys
    named in `skip` left out (they have a table of their own)."""
    rows = [*HEADER, *first]
    for f in [f for cls in classes for f in declared(cls)]:
        if f.metadata["group"] != group or (f.metadata["key"] or f.name) in skip:
            continue
        rows.append(row(f))
    return "\n".join(rows) + "\n"


def monitor_tables() -> dict[str, str]:
    """Marker name -> table, for the monitor's own sections."""
    return {name: table(*spec) for name, spec in SECTIONS.items()}


def render(text: str, tables: Mapping[str, str]) -> str:
    """`text` with every marked table replaced by the one `tables` has under its name; a marker
    no table is declared for is an error (a typo would otherwise leave a stale table)."""

    def block(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in tables:
            raise KeyError(
                f"<!-- keys: {name} -->: no section of that name is declared "
                f"(known: {', '.join(sorted(tables))})"
            )
        return match.group(1) + tables[name] + match.group(4)

    return _BLOCK.sub(block, text)


def markers(text: str) -> list[str]:
    """The names of the marked tables in `text`, in order."""
    return [m.group(2) for m in _BLOCK.finditer(text)]
