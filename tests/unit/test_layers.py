"""The layers of docs/ARCHITECTURE.md hold, and `lint-imports` (in `make lint`) catches a break."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("expressway_certd", "monitor", "renewers", "alerts", "lab")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        check=False,
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_its_layers(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("monitor/facts.py", "import renewers.validate", "Composition root on top"),
        ("monitor/probe.py", "from expressway_certd import cli", "Composition root on top"),
        ("renewers/validate.py", "import alerts.metrics", "Composition root on top"),
        ("lab/pki.py", "import monitor.facts", "The simulators share no code"),
        ("renewers/manager.py", "import lab.pki", "Only the composition root may use"),
        ("renewers/pipeline/record.py", "import renewers.pipeline.runner", "The pipeline's seams"),
        # the two cycles issue 10 found, hidden in function-local imports
        ("alerts/notify.py", "import alerts.notifiers", "No import cycle"),
        ("monitor/config_ca.py", "import monitor.config", "No import cycle"),
        (
            "renewers/pipeline/stages/csr.py",
            "from renewers.pipeline import dryrun",
            "The pipeline's seams",
        ),
    ],
)
def test_a_reversed_import_breaks_a_contract(
    tree: Path, module: str, line: str, contract: str
) -> None:
    path = tree / module
    # Inside a function: a function-local import must not dodge the check either.
    path.write_text(
        path.read_text(encoding="utf-8") + f"\n\ndef _reversed() -> None:\n    {line}\n",
        encoding="utf-8",
    )
    result = lint_imports(tree)
    assert result.returncode != 0
    assert f"{contract}" in result.stdout
    assert "BROKEN" in result.stdout
