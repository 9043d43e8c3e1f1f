"""monitor/errors.py draws the whole exception tree; the drawing matches the classes: every
subclass of CertdError in the product is drawn, under its own parent, with the module that
defines it when that is not monitor/errors.py, and nothing else is drawn."""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass

import expressway_certd.monitor.errors
from expressway_certd.monitor.errors import CertdError

PACKAGES = ("expressway_certd",)  # monitor, renewers and alerts are its subpackages
_LINE = re.compile(r"^(?P<prefix>[ |+-]*)(?P<name>[A-Z]\w*)\b(?P<rest>.*)$")
_MODULE = re.compile(r"\(([\w/]+\.py)\)")


@dataclass(frozen=True)
class Drawn:
    parent: str | None
    module: str | None  # the file named in parentheses, e.g. renewers/expressway.py


def drawing(doc: str) -> dict[str, Drawn]:
    """Class name -> where the tree drawing in `doc` puts it (parent by indentation)."""
    out: dict[str, Drawn] = {}
    stack: list[tuple[int, str]] = []  # (column of the name, name), outermost first
    started = False
    for line in doc.splitlines():
        match = _LINE.match(line)
        if not match or (not started and match["prefix"]):
            continue
        if not started and match["name"] != "CertdError":
            continue
        started = True
        column = len(match["prefix"])
        while stack and stack[-1][0] >= column:
            stack.pop()
        module = _MODULE.search(match["rest"])
        out[match["name"]] = Drawn(stack[-1][1] if stack else None, module and module[1])
        stack.append((column, match["name"]))
    return out


def product_errors() -> dict[str, type]:
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if ".migrations.versions" not in info.name:
                importlib.import_module(info.name)
    found: dict[str, type] = {}
    todo = [CertdError]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.split(".")[0] in PACKAGES and not sub.__name__.startswith("_"):
                found[sub.__name__] = sub
    return found


def test_the_drawing_matches_the_classes() -> None:
    drawn = drawing(expressway_certd.monitor.errors.__doc__ or "")
    classes = product_errors()
    assert set(drawn) - {"CertdError"} == set(classes)
    for name, cls in classes.items():
        assert drawn[name].parent == cls.__mro__[1].__name__, (
            f"{name} is drawn under the wrong class"
        )
        # the drawing names the file in the repository: monitor/ for expressway_certd.monitor
        folder = re.sub(r"^expressway_certd\.(?=(monitor|renewers|alerts)\.)", "", cls.__module__)
        path = folder.replace(".", "/") + ".py"
        if cls.__module__ != "expressway_certd.monitor.errors":
            assert drawn[name].module == path, f"{name} is defined in {path}"


def test_the_reader_sees_a_misplaced_leaf() -> None:
    doc = """Tree:

CertdError
 +-- DeviceError              a device failed
 |    +-- Refused             refused (renewers/expressway.py)
 +-- CAError                  a CA failed
 |    +-- CARequestError      one request failed (renewers/ca/base.py)
 |         +-- Deeper
 +-- NotifyError
"""
    assert drawing(doc) == {
        "CertdError": Drawn(None, None),
        "DeviceError": Drawn("CertdError", None),
        "Refused": Drawn("DeviceError", "renewers/expressway.py"),
        "CAError": Drawn("CertdError", None),
        "CARequestError": Drawn("CAError", "renewers/ca/base.py"),
        "Deeper": Drawn("CARequestError", None),
        "NotifyError": Drawn("CertdError", None),
    }
