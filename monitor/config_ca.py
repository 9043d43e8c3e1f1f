"""Parsing of the `[ca.NAME]` tables (CA connectors: acme, est, adcs)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monitor.errors import ConfigError

CA_KINDS = ("acme", "est", "adcs")


def parse_cas(file: Path, table: Any) -> Mapping[str, Any]:
    """Validate every `[ca.NAME]` table; returns name -> CA config object."""
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: ca: must be tables like [ca.corp-adcs]")
    if table:
        name = next(iter(table))
        raise ConfigError(
            f"{file}: ca.{name}: CA connectors are not available in this version; "
            "remove the [ca.*] tables"
        )
    return {}
