"""The configuration as the product reads it: the core's loader (monitor/config.py) given the
registry of `[ca.NAME]` kinds, which are declared beside their connectors (renewers/ca/
*_config.py, listed in renewers/ca/kinds.py). Every verb, the daemon and the tests load a file
through here; the monitoring core never imports the renewal side (docs/ARCHITECTURE.md)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from expressway_certd.monitor.config import Config, load_config_with, parse_config_with
from expressway_certd.monitor.config_ca import CAConfig, CAKind, parse_ca_tables
from expressway_certd.renewers.ca.kinds import CA_KINDS

REGISTRY: tuple[CAKind, ...] = CA_KINDS


def load_config(path: str | Path, *, check_files: bool = True) -> Config:
    """Read and validate a config file; ConfigError explains any problem."""
    return load_config_with(path, ca_kinds=REGISTRY, check_files=check_files)


def parse_config(file: Path, data: Mapping[str, Any], *, check_files: bool = True) -> Config:
    """Validate an already parsed TOML document."""
    return parse_config_with(file, data, ca_kinds=REGISTRY, check_files=check_files)


def parse_cas(file: Path, table: Any, *, check_files: bool = True) -> Mapping[str, CAConfig]:
    """Validate the `[ca.NAME]` tables alone (name -> CA config)."""
    return parse_ca_tables(file, table, REGISTRY, check_files=check_files)
