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
# migration upgrade/downgrade; `main` is a module's entry point, sdnotify/email each `message`.
CONVENTIONS = {"register", "run", "render", "gather", "run_check", "main", "message", "upgrade",
               "downgrade"}  # fmt: skip
# Known and left to the owner of renewers/pipeline/ (split while this test was written): remove
# the entry when context.py imports renewers.trust.issued_by instead of its copy.
KNOWN: dict[str, list[str]] = {}


def definitions() -> dict[tuple[str, str], list[str]]:
    """(kind, name) -> the modules that define it at the top level."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.ClassDef):
                    kind = "class"
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    kind = "function"
                else:
                    continue
                found[(kind, node.name)].append(str(path.relative_to(ROOT)))
    return found


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
