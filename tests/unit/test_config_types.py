"""No `Any` in Config: every field of `monitor.config.Config` and of every dataclass it reaches
(sections, notifier kinds, their nested tables), and of every CA kind's config in the registry
the composition root gives the loader (declared beside its connector, renewers/ca/), has a
precise type."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from expressway_certd.config import REGISTRY
from expressway_certd.monitor.config import Config


def _loose(hint: object, where: str, seen: set[type]) -> list[str]:
    """The places below `hint` typed Any (or a bare, unparameterised container)."""
    if hint is Any:
        return [where]
    if hint in (dict, list, tuple, set, frozenset, typing.Mapping, typing.Sequence):
        return [f"{where} (bare {hint!r})"]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if hint in seen:
            return []
        seen.add(hint)
        hints = typing.get_type_hints(hint)
        return [
            found
            for f in dataclasses.fields(hint)
            for found in _loose(hints[f.name], f"{hint.__name__}.{f.name}", seen)
        ]
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is not None:
        return [found for arg in args if arg is not Ellipsis for found in _loose(arg, where, seen)]
    return []


def test_no_any_anywhere_in_config() -> None:
    seen: set[type] = set()
    assert _loose(Config, "Config", seen) == []
    # Config.cas holds CAConfig (a Protocol); each kind's dataclass is what its parse returns.
    for kind in REGISTRY:
        assert _loose(typing.get_type_hints(kind.parse)["return"], kind.name, seen) == []
    # The walk really reaches the sections declared in other modules.
    names = {cls.__name__ for cls in seen}
    assert {"DaemonConfig", "ExpresswayConfig", "ACMEConfig", "WebexConfig"} <= names, names


@dataclasses.dataclass(frozen=True)
class _Inner:
    value: Any


@dataclasses.dataclass(frozen=True)
class _Outer:
    items: tuple[_Inner, ...]
    table: typing.Mapping[str, Any]
    plain: int | None


def test_the_walk_finds_an_any() -> None:
    assert _loose(_Outer, "_Outer", set()) == ["_Inner.value", "_Outer.table"]
