"""Config text for renewal runs on the lab: adds `renewal = {...}` to an Expressway's entry and a
`[ca.NAME]` table for the lab EST CA. Used by `demo` and the end-to-end tests.

Imports nothing from monitor/, renewers/ or alerts/ (it only writes TOML text).
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path

from expressway_certd_lab.est import ESTSimulator


def add_renewal(config_text: str, target: str, renewal: str) -> str:
    """Insert `renewal = { ... }` into the [[expressway]] block named `target`."""
    pattern = re.compile(rf'(name = "{re.escape(target)}"\n)')
    if not pattern.search(config_text):
        raise ValueError(f"no [[expressway]] named {target!r} in the lab config")
    return pattern.sub(lambda m: f"{m.group(1)}renewal = {{ {renewal} }}\n", config_text, count=1)


def add_unified_cm_keys(config_text: str, name: str, *lines: str) -> str:
    """Add `key = value` lines to the [[unified_cm]] block named `name`."""
    pattern = re.compile(rf'(\[\[unified_cm\]\]\nname = "{re.escape(name)}"\n)')
    if not pattern.search(config_text):
        raise ValueError(f"no [[unified_cm]] named {name!r} in the lab config")
    added = "".join(f"{line}\n" for line in lines)
    return pattern.sub(lambda m: m.group(1) + added, config_text, count=1)


def window_opening_in(now: datetime, at_least: timedelta, duration: str = "1h") -> str:
    """A UTC `maintenance_window` table that opens on the first whole minute at least
    `at_least` after `now` (cron has minute resolution), for the lab scenarios."""
    start = (now + at_least + timedelta(minutes=1)).replace(second=0, microsecond=0)
    return (
        f'{{ cron = "{start.minute} {start.hour} * * *", timezone = "UTC", '
        f'duration = "{duration}" }}'
    )


def est_ca_section(est: ESTSimulator, directory: Path, name: str = "lab-est") -> str:
    """A `[ca.NAME]` table for the running EST simulator (password in a 0600 file)."""
    secret = directory / f"{name}.password"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(est.users["est"] + "\n")
    return (
        f'\n[ca.{name}]\nkind = "est"\nurl = "{est.url}"\ntrust_anchor = "{est.trust_anchor}"\n'
        f'username = "est"\npassword = "file:{secret}"\n'
    )


def set_daemon_keys(config_text: str, **keys: str) -> str:
    """Add `key = "value"` lines right under [daemon]."""
    lines = "".join(f'{k} = "{v}"\n' for k, v in keys.items())
    return config_text.replace("[daemon]\n", "[daemon]\n" + lines, 1)


def trust_also(config_text: str, directory: Path, *extra_pem: bytes) -> str:
    """Point [daemon] trust_bundle at a copy of the lab bundle plus `extra_pem` (e.g. the EST
    root, so chains served after a renewal verify too)."""
    match = re.search(r'^trust_bundle = "([^"]+)"$', config_text, flags=re.MULTILINE)
    if match is None:
        raise ValueError("the lab config has no [daemon] trust_bundle")
    combined = directory / "trust-bundle.pem"
    combined.write_bytes(Path(match.group(1)).read_bytes() + b"".join(extra_pem))
    return config_text.replace(match.group(0), f'trust_bundle = "{combined}"', 1)
