"""The layers of docs/ARCHITECTURE.md hold, and `lint-imports` (in `make lint`) catches a break."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("expressway_certd", "monitor", "renewers", "alerts", "lab", "packaging")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "packaging" / "lab")]),
    }
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
        # symlinks=True: expressway_certd/monitor etc. stay links to the top-level folders
        shutil.copytree(
            ROOT / name,
            tmp_path / name,
            symlinks=True,
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_its_layers(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "monitor/facts.py",
            "import expressway_certd.renewers.validate",
            "Composition root on top",
        ),
        ("monitor/probe.py", "from expressway_certd import cli", "Composition root on top"),
        (
            "renewers/validate.py",
            "import expressway_certd.alerts.metrics",
            "Composition root on top",
        ),
        ("lab/pki.py", "import expressway_certd.monitor.facts", "The simulators share no code"),
        (
            "renewers/manager.py",
            "import expressway_certd_lab.pki",
            "Only the composition root may use",
        ),
        (
            "renewers/pipeline/record.py",
            "import expressway_certd.renewers.pipeline.runner",
            "The pipeline's seams",
        ),
        # the two cycles issue 10 found, hidden in function-local imports
        ("alerts/notify.py", "import expressway_certd.alerts.notifiers", "No import cycle"),
        ("monitor/config_ca.py", "import expressway_certd.monitor.config", "No import cycle"),
        (
            "renewers/pipeline/stages/csr.py",
            "from expressway_certd.renewers.pipeline import dryrun",
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


def test_a_new_module_of_the_composition_root_must_be_placed_in_a_layer(tree: Path) -> None:
    (tree / "expressway_certd" / "cmd_new.py").write_text('"""A verb nobody placed."""\n')
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "cmd_new" in result.stdout


def test_no_module_is_loaded_under_its_folder_name() -> None:
    """From a checkout, `monitor` etc. are importable by folder name too; a string import path
    or a missed rewrite would load a second copy of each module (two registries, two metric
    sets). Every verb module, the daemon, the API and the demo load only installed names."""
    code = (
        "import importlib, sys\n"
        "from expressway_certd import cli\n"
        "cli.build_parser(every_verb=True)\n"
        "for m in ('daemon', 'http', 'cmd_demo', 'trustmap_live', 'deadline_metrics'):\n"
        "    importlib.import_module('expressway_certd.' + m)\n"
        "bare = ('monitor', 'renewers', 'alerts', 'lab')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bare))\n"
        "print(len([m for m in sys.modules if m.startswith('expressway_certd')]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    bare, ours = run.stdout.splitlines()
    assert bare == "[]"
    assert int(ours) > 80  # the check saw the product's modules
