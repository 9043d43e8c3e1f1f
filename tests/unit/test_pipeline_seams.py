"""Fitness of the pipeline package: production code carries no test hook. Fault injection is
a seam tests pass in (renewers/pipeline/context.py FaultSeam), so no module of the pipeline
reads the environment or signals its own process."""

from __future__ import annotations

import ast
from pathlib import Path

import expressway_certd.renewers.pipeline

PACKAGE = Path(expressway_certd.renewers.pipeline.__file__).parent


def suspicious(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            name = f"{node.value.id}.{node.attr}"
            if name in ("os.environ", "os.getenv", "os.putenv", "signal.SIGKILL"):
                found.append(f"line {node.lineno}: {name}")
    return found


def test_no_module_of_the_pipeline_reads_the_environment_or_kills_itself() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 10  # the package, not an empty glob
    offenders = {
        str(path.relative_to(PACKAGE)): hits
        for path in modules
        if (hits := suspicious(ast.parse(path.read_text())))
    }
    assert offenders == {}


def test_the_check_sees_an_environment_read() -> None:
    assert suspicious(ast.parse("import os\nos.environ.get('X')\n")) == ["line 2: os.environ"]
