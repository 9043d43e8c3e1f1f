"""monitor/errors.py draws the whole exception tree; the drawing matches the classes."""

from __future__ import annotations

import importlib
import pkgutil
import re

import monitor.errors
from monitor.errors import CertdError

PACKAGES = ("monitor", "renewers", "alerts", "expressway_certd")


def all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | all_subclasses(sub)
    return out


def test_every_error_class_is_drawn_under_its_parent() -> None:
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if ".migrations.versions" not in info.name:
                importlib.import_module(info.name)
    doc = monitor.errors.__doc__ or ""
    drawn: dict[str, int] = {}
    for line in doc.splitlines():
        match = re.match(r"^([ |+-]*)(\w+(?:Error|Unsupported|Refused|Lost|Conflict))\b", line)
        if match:
            drawn[match.group(2)] = len(match.group(1))
    classes = {c for c in all_subclasses(CertdError) if not c.__name__.startswith("_")}
    assert {c.__name__ for c in classes} == set(drawn) - {"CertdError"}
    for cls in classes:
        parent = cls.__mro__[1].__name__
        assert drawn[cls.__name__] > drawn[parent], f"{cls.__name__} is not drawn under {parent}"
