"""The simulators never import client code: lab/ imports nothing from monitor/, renewers/, alerts/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[2] / "lab"
# the product: expressway_certd and its monitor/renewers/alerts, and their folder names
FORBIDDEN = ("expressway_certd", "monitor", "renewers", "alerts")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def lab_files() -> list[Path]:
    return sorted(LAB.rglob("*.py"))


def test_lab_has_modules() -> None:
    assert len(lab_files()) >= 5


@pytest.mark.parametrize("path", lab_files(), ids=lambda p: p.name)
def test_lab_module_imports_no_client_code(path: Path) -> None:
    bad = sorted(name for name in imported_modules(path) if name.split(".")[0] in FORBIDDEN)
    assert bad == [], f"{path.name} imports {bad}; lab/ must not share code with the clients"


def test_checker_sees_forbidden_imports(tmp_path: Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text(
        "import os\nfrom expressway_certd.monitor.facts import parse_facts\n"
        "import expressway_certd.renewers.x\n"
    )
    assert {"expressway_certd.monitor.facts", "expressway_certd.renewers.x"} <= imported_modules(
        sample
    )
