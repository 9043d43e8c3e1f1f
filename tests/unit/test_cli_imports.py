"""The CLI imports only what the verb being run uses (issue 11, a fast CLI), and its table of
verbs says the same as the modules that register them."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from expressway_certd.cli import VERBS, build_parser, main
from expressway_certd.monitor import __version__

HEAVY = (
    "sqlalchemy",
    "aiohttp",
    "apscheduler",
    "prometheus_client",
    "acme",
    "asyncssh",
    "lab",
    "alerts",
    "renewers",
    "expressway_certd.monitor.store",
    "expressway_certd.monitor.config",
    "expressway_certd.daemon",
    "expressway_certd.http",
    "cryptography.hazmat.primitives.serialization.pkcs7",  # CA answers only (and e-mail)
)


def imported_after(code: str) -> set[str]:
    """The top-level and listed modules a fresh interpreter has loaded after `code`."""
    probe = (
        "import sys, json\n"
        f"{code}\n"
        f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_the_verb_table_matches_what_the_modules_register() -> None:
    for verb, module, help_line in VERBS:
        parser = argparse.ArgumentParser()
        subparsers = parser.add_subparsers()
        importlib.import_module(module).register(subparsers)
        helps = {a.dest: a.help for a in subparsers._choices_actions}
        assert verb in helps, f"{module} does not register {verb}"
        assert helps[verb] == help_line, f"VERBS help of {verb} differs from {module}'s"
    every = build_parser([], every_verb=True)
    registered = next(a for a in every._actions if isinstance(a, argparse._SubParsersAction))
    assert list(registered.choices) == [verb for verb, _, _ in VERBS]


def test_help_imports_no_verb_module() -> None:
    loaded = imported_after(
        "from expressway_certd.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    assert loaded == set(), f"--help loads {sorted(loaded)}"


def test_scan_loads_neither_the_daemon_nor_the_store_nor_the_simulators() -> None:
    loaded = imported_after(
        "from expressway_certd.cli import build_parser\nbuild_parser(['scan', '127.0.0.1:1'])"
    )
    assert loaded == set(), f"scan loads {sorted(loaded)}"


@pytest.mark.parametrize("verb", ["status", "decode", "lab"])
def test_each_verb_still_parses_its_own_arguments(verb: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0


def test_an_unknown_verb_is_refused_naming_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["scna"])
    assert "invalid choice: 'scna'" in capsys.readouterr().err


def test_version_matches_the_project_metadata() -> None:
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]
    assert __version__ == declared
