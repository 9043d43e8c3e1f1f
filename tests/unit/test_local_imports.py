"""No function-local import dodges an import cycle.

import-linter (`make lint`) sees function-local imports, so a cycle cannot hide in one; what is
left is the reason a module is imported late. The only accepted one is delaying an optional or
heavy dependency, and it is written on the line: `# noqa: PLC0415 - <reason>`. A late import of
a module the file already imports at the top delays nothing and is refused too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("expressway_certd", "monitor", "renewers", "alerts", "lab")
REASON = re.compile(r"#\s*noqa:[^-]*PLC0415[^-]*-\s*\S")


def _module(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""]
    return [alias.name for alias in node.names]


def local_import_problems(source: str, name: str) -> list[str]:
    """Function-local imports in `source` with no reason, or of a module imported at the top."""
    tree = ast.parse(source)
    lines = source.splitlines()
    top = {
        m
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for m in _module(node)
    }
    late = {
        id(node): node
        for func in ast.walk(tree)
        if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(func)
        if isinstance(node, ast.Import | ast.ImportFrom)
    }
    problems = []
    for node in sorted(late.values(), key=lambda n: n.lineno):
        where = f"{name}:{node.lineno}"
        if not REASON.search(lines[node.lineno - 1]):
            problems.append(f"{where}: no `# noqa: PLC0415 - reason`")
        problems += [
            f"{where}: {m} is imported at the top already" for m in _module(node) if m in top
        ]
    return problems


def test_every_late_import_says_why_and_delays_something() -> None:
    problems = [
        problem
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for problem in local_import_problems(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert problems == []


def test_the_check_catches_both_kinds() -> None:
    source = (
        "import json\n"
        "def f():\n"
        "    def g():  # nested: its import is listed once\n"
        "        import json  # noqa: PLC0415 - looks fine\n"
        "    from monitor import store  # noqa: PLC0415\n"
        "    import yaml  # noqa: PLC0415 - optional: only for YAML input\n"
    )
    assert local_import_problems(source, "m.py") == [
        "m.py:4: json is imported at the top already",
        "m.py:5: no `# noqa: PLC0415 - reason`",
    ]
