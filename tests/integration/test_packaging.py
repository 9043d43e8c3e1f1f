"""The production wheel installs the product without the simulators; the simulators are the
`lab` extra, a distribution of their own built from packaging/lab/ (docs/ARCHITECTURE.md,
"Packaging"). Both wheels are built here with pip, from a copy of the sources, and listed."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

# One xdist worker builds the wheels (module fixture, ~20 s of pip) and runs every test here;
# spread over the workers, each would build them again (docs/ARCHITECTURE.md, "Test speed").
pytestmark = pytest.mark.xdist_group("packaging-wheels")

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = {"expressway_certd"}
# expressway_certd/{monitor,renewers,alerts} and packaging/lab/expressway_certd_lab are links to
# these top-level folders (copied as links, as git checks them out).
FOLDERS = ["monitor", "renewers", "alerts", "lab"]
SOURCES = ["pyproject.toml", "README.md", "packaging", "expressway_certd", *FOLDERS]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, zipfile.ZipFile]:
    """name -> the wheel pip builds for it (`pip wheel --no-deps`), from a copy of the tree."""
    src = tmp_path_factory.mktemp("src")
    out = tmp_path_factory.mktemp("wheels")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore, symlinks=True)
        else:
            shutil.copy2(ROOT / name, src / name)
    for project in (src, src / "packaging" / "lab"):
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
             "-w", str(out), str(project)],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    found = {}
    for wheel in out.glob("*.whl"):
        name = wheel.name.split("-")[0]
        found[name] = zipfile.ZipFile(wheel)
    assert set(found) == {"expressway_certd", "expressway_certd_lab"}
    return found


def top_level(wheel: zipfile.ZipFile) -> set[str]:
    return {n.split("/")[0] for n in wheel.namelist() if ".dist-info/" not in n}


def metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.message_from_bytes(wheel.read(name))


def test_the_production_wheel_has_the_product_and_no_simulators(wheels) -> None:
    wheel = wheels["expressway_certd"]
    # One installed name: nothing generic such as `monitor` or `alerts` that another
    # distribution could also install.
    assert top_level(wheel) == PRODUCT
    names = set(wheel.namelist())
    assert "expressway_certd/monitor/migrations/versions/0001_released_0_1.py" in names
    assert {
        "expressway_certd/renewers/pipeline/runner.py",
        "expressway_certd/alerts/metrics.py",
    } <= names
    assert not {n for n in names if n.startswith(("lab/", "tests/", "expressway_certd_lab/"))}
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "expressway-certd = expressway_certd.cli:main" in wheel.read(entry_points).decode()


def test_the_lab_extra_is_the_simulators_wheel_of_the_same_version(wheels) -> None:
    lab = wheels["expressway_certd_lab"]
    assert top_level(lab) == {"expressway_certd_lab"}
    assert {Path(n).name for n in lab.namelist() if n.startswith("expressway_certd_lab/")} >= {
        "expressway.py", "cucm.py", "adcs.py", "est.py", "topology.py", "cmd_lab.py",
    }  # fmt: skip
    product = metadata(wheels["expressway_certd"])
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert metadata(lab)["Version"] == product["Version"] == version
    assert "lab" in product.get_all("Provides-Extra", [])
    assert f'expressway-certd-lab=={version}; extra == "lab"' in product.get_all("Requires-Dist")


def test_every_module_of_the_tree_is_in_one_of_the_wheels(wheels) -> None:
    shipped = {n for w in wheels.values() for n in w.namelist() if n.endswith(".py")}
    installed_as = {
        "monitor": "expressway_certd/monitor",
        "renewers": "expressway_certd/renewers",
        "alerts": "expressway_certd/alerts",
        "lab": "expressway_certd_lab",
    }
    in_tree = {
        f"{installed_as[folder]}/{p.relative_to(ROOT / folder)}"
        for folder in FOLDERS
        for p in (ROOT / folder).rglob("*.py")
    } | {str(p.relative_to(ROOT)) for p in (ROOT / "expressway_certd").glob("*.py")}
    assert in_tree == shipped


def test_without_the_simulators_the_demo_says_what_to_install(tmp_path: Path) -> None:
    # As in a production install: the simulators cannot be imported at all.
    code = (
        "import sys; sys.modules['expressway_certd_lab'] = None\n"
        "from expressway_certd.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    for verb in ("demo", "lab"):
        run = subprocess.run(
            [sys.executable, "-c", code, verb], check=False, cwd=tmp_path, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert run.returncode == 2, run.stderr
        assert run.stderr.startswith(f"expressway-certd {verb}: the simulators are not installed")
        assert "pip install 'expressway-certd[lab]'" in run.stderr
        assert "Traceback" not in run.stderr
    # Other verbs do not need them.
    run = subprocess.run(
        [sys.executable, "-c", code, "--version"], check=False, cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert run.returncode == 0 and "expressway-certd" in run.stdout
