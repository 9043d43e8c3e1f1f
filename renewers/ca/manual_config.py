"""`[ca.NAME]` with `kind = "manual"`: the section the manual connector
(renewers/ca/manual.py, a CA without automation) takes, declared beside it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from expressway_certd.monitor.config_base import Secret, Section
from expressway_certd.monitor.config_ca import CAKind, CALimits, ekus_of


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

    def secrets(self) -> tuple[Secret, ...]:
        return ()


def parse(file: Path, name: str, s: Section, limits: CALimits) -> ManualConfig:
    """A `kind = "manual"` table."""
    csr_dir = s.get_str("csr_dir")
    return ManualConfig(
        name=name,
        csr_dir=None if csr_dir is None else s.path_of("csr_dir", csr_dir, file.parent),
        chain=s.get_file("chain", file.parent),
        poll=s.get_duration("poll", timedelta(minutes=5)),
        ekus=ekus_of(s),
        trust_anchor=s.get_file("trust_anchor", file.parent),
        trust_anchors=s.get_file("trust_anchors", file.parent),
        timeout=s.get_duration("timeout", timedelta(seconds=30)),
        limits=limits,
    )


MANUAL = CAKind("manual", frozenset({"csr_dir", "chain", "poll", "ekus"}), parse)
