"""`[ca.NAME]` with `kind = "manual"`: the section the manual connector
(renewers/ca/manual.py, a CA without automation) takes, declared beside it: each key once, with
its default and doc (docs/configuration.md's table is generated from them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from expressway_certd.monitor.config_base import Secret, Section, key
from expressway_certd.monitor.config_ca import CACommon, CAKind, ekus_key, ekus_of, with_common


@dataclass(frozen=True)
class ManualConfig(CACommon):
    """A CA without automation (a web portal): the operator signs and `provide`s the cert."""

    name: str
    csr_dir: Path | None = key(
        None,
        "where `submit` writes the CSR for the operator to take to the portal",
        shown="`data_dir`/manual/NAME",
    )
    chain: Path | None = key(
        None,
        "PEM bundle of the CA chain (intermediates + root); without it, give `--chain` to "
        "`provide` when the CA changes",
    )
    poll: timedelta = key(
        timedelta(minutes=5),
        "how often a waiting renewal is looked at again; it never submits again: only "
        "`provide` hands in a certificate",
    )
    ekus: frozenset[str] | None = ekus_key()
    kind: str = "manual"

    def secrets(self) -> tuple[Secret, ...]:
        return ()


def parse(file: Path, name: str, s: Section, common: CACommon) -> ManualConfig:
    """A `kind = "manual"` table."""
    csr_dir = s.get_str("csr_dir")
    config = ManualConfig(
        name=name,
        csr_dir=None if csr_dir is None else s.path_of("csr_dir", csr_dir, file.parent),
        chain=s.get_file("chain", file.parent),
        poll=s.get_duration("poll", ManualConfig.poll),
        ekus=ekus_of(s),
    )
    return with_common(config, common)


MANUAL = CAKind("manual", ManualConfig, parse)
