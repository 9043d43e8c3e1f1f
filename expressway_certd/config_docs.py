"""Writes docs/configuration.md's key tables from the config declarations: the monitor's own
sections (monitor/config_docs.py) and, through the registry of CA kinds (renewers/ca/kinds.py),
the keys every `[ca.NAME]` takes (`ca-common`), one table per kind (`ca-kind-NAME`, its own
keys) and one per sub-table a kind declares (`ca-kind-NAME-KEY`, e.g. ACME's `rfc2136`).

    python -m expressway_certd.config_docs docs/configuration.md

rewrites every table between `<!-- keys: NAME -->` and `<!-- end keys -->`;
tests/unit/test_config_structure.py fails when the committed file is stale. A new kind in the
registry gets its tables with no change here: write its markers where its prose is.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path

from expressway_certd.monitor import config_docs
from expressway_certd.monitor.config_base import declared, one_of, toml_keys
from expressway_certd.monitor.config_ca import CACommon, CAKind
from expressway_certd.renewers.ca.kinds import CA_KINDS


def subtables(cls: type, prefix: str) -> Iterator[tuple[str, type]]:
    """(marker name, dataclass) of every declared key of `cls` that is a table of its own
    (its type, or the type of its `X | None`, is a dataclass with declared keys), depth first."""
    hints = typing.get_type_hints(cls)
    for f in declared(cls):
        hint = hints[f.name]
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        args = typing.get_args(hint) if union else (hint,)
        for arg in args:
            if isinstance(arg, type) and dataclasses.is_dataclass(arg) and declared(arg):
                name = f"{prefix}-{f.metadata['key'] or f.name}"
                yield name, arg
                yield from subtables(arg, name)


def ca_tables(kinds: Sequence[CAKind]) -> dict[str, str]:
    """Marker name -> table, for the `[ca.NAME]` tables of the kinds given."""
    kind_row = f"| `kind` | required | {one_of(tuple(k.name for k in kinds))} |"
    out = {"ca-common": config_docs.table((CACommon,), first=(kind_row,))}
    common = frozenset(toml_keys(CACommon))
    for kind in kinds:
        name = f"ca-kind-{kind.name}"
        out[name] = config_docs.table((kind.config,), skip=common)
        for sub, cls in subtables(kind.config, name):
            out[sub] = config_docs.table((cls,))
    return out


def tables(kinds: Sequence[CAKind] = CA_KINDS) -> dict[str, str]:
    """Every table docs/configuration.md shows: the monitor's sections and the CA kinds'."""
    monitor, ca = config_docs.monitor_tables(), ca_tables(kinds)
    clash = sorted(monitor.keys() & ca.keys())
    if clash:
        raise ValueError(f"CA tables named like the monitor's sections: {', '.join(clash)}")
    return {**monitor, **ca}


def render(text: str, kinds: Sequence[CAKind] = CA_KINDS) -> str:
    """`text` with every marked table regenerated."""
    return config_docs.render(text, tables(kinds))


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "docs/configuration.md")
    text = path.read_text()
    missing = [name for name in tables() if name not in config_docs.markers(text)]
    if missing:
        print(
            f"{path}: no place for {', '.join(missing)}: write '<!-- keys: NAME -->' and "
            "'<!-- end keys -->' where the section's prose is, then run this again",
            file=sys.stderr,
        )
    path.write_text(render(text))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
