"""The key tables of docs/configuration.md, generated from the config declarations.

`python -m monitor.config_docs docs/configuration.md` rewrites every table between
`<!-- keys: NAME -->` and `<!-- end keys -->`; a test fails when the committed file is stale.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from expressway_certd.monitor.config import (
    DaemonConfig,
    ExpresswayConfig,
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


def table(classes: tuple[Any, ...], group: str = "") -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for f in [f for cls in classes for f in declared(cls)]:
        if f.metadata["group"] != group:
            continue
        name = f.metadata["key"] or f.name
        rows.append(f"| `{name}` | {shown_default(f)} | {f.metadata['doc']} |")
    return "\n".join(rows) + "\n"


def render(text: str) -> str:
    """`text` with every marked table regenerated."""

    def block(match: re.Match[str]) -> str:
        return match.group(1) + table(*SECTIONS[match.group(2)]) + match.group(4)

    return _BLOCK.sub(block, text)


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "docs/configuration.md")
    path.write_text(render(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
