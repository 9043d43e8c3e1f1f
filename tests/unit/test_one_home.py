"""One home for each shared thing: no two modules of the product define a class of the same
name (two `Capabilities` meant two different things), and a public function name is defined
once, except the names of the verb-module and migration conventions."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("expressway_certd", "monitor", "renewers", "alerts")
# Conventions: every CLI verb module has register/run (and some render/gather/run_check), every
# migration upgrade/downgrade, every CA kind's config module (renewers/ca/*_config.py)
# parse; `main` is a module's entry point, sdnotify/email each `message`.
CONVENTIONS = {"register", "run", "render", "gather", "run_check", "main", "message", "upgrade",
               "downgrade", "parse"}  # fmt: skip
# Known exceptions (none left: the pipeline's copy of issued_by and its EKU-name dicts went).
KNOWN: dict[str, list[str]] = {}


def definitions() -> dict[tuple[str, str], list[str]]:
    """(kind, name) -> the modules that define it at the top level (kind "constant": an
    upper-case public name assigned at the top level; migrations are frozen copies, left out)."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            where = str(path.relative_to(ROOT))
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.ClassDef):
                    found[("class", node.name)].append(where)
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    found[("function", node.name)].append(where)
                elif "/migrations/" not in where:
                    for name in _assigned(node):
                        if name.isupper() and not name.startswith("_") and len(name) > 1:
                            found[("constant", name)].append(where)
    return found


def _assigned(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def test_no_two_classes_share_a_name() -> None:
    twice = {name: where for (kind, name), where in definitions().items() if kind == "class"}
    assert {name: where for name, where in twice.items() if len(where) > 1} == {}


def test_a_public_function_is_defined_once() -> None:
    twice = {
        name: where
        for (kind, name), where in definitions().items()
        if kind == "function" and len(where) > 1
        and not name.startswith("_") and name not in CONVENTIONS
    }  # fmt: skip
    assert twice == KNOWN


def test_a_public_constant_is_defined_once() -> None:
    """One home for shared values: two `DEFAULT_RENEW_BEFORE`s can drift apart, and two
    `EKU_NAMES` of different shapes (a dict and a tuple) read as one thing and are not. A type
    variable (`T`) is not a constant."""
    twice = {
        name: where
        for (kind, name), where in definitions().items()
        if kind == "constant" and len(where) > 1
    }
    assert twice == {}
