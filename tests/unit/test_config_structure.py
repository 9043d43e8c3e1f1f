"""How the config code is built (issue 10): defaults written once, typed, no import cycle."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.config import (
    Config,
    DaemonConfig,
    MaintenanceWindow,
    RenewalConfig,
    UnifiedCMConfig,
    check_runtime,
    load_config,
)
from monitor.config_base import Secret
from monitor.errors import ConfigError

ROOT = Path(__file__).parents[2]
CONFIG_MODULES = ["monitor/config_base.py", "monitor/config.py", "monitor/config_ca.py",
                  "monitor/config_notify.py"]  # fmt: skip


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "certd.toml"
    path.write_text(text)
    return path


def test_parser_defaults_are_the_dataclass_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    cfg = load_config(
        write(
            tmp_path,
            "[[expressway]]\nname = 'c'\naddress = 'c.example.com'\n"
            "renewal = { ca = 'hand', maintenance_window = { cron = '0 2 * * 6' } }\n"
            "[ca.hand]\nkind = 'manual'\n"
            "[[unified_cm]]\nname = 'u'\nnodes = ['pub.example.com']\nusername = 'a'\n"
            "password = 'env:X'\n",
        )
    )
    assert cfg.daemon == DaemonConfig()
    renewal = cfg.expressways[0].renewal
    assert renewal is not None
    assert renewal == RenewalConfig(ca="hand", maintenance_window=MaintenanceWindow("0 2 * * 6"))
    ucm = cfg.unified_cms[0]
    assert ucm == UnifiedCMConfig(
        name="u", nodes=("pub.example.com",), username="a", password=ucm.password
    )


@pytest.mark.parametrize("module", CONFIG_MODULES)
def test_no_any_in_config_types(module):
    """No field of a config dataclass is typed Any (Config.cas and .notifiers used to be)."""
    tree = ast.parse((ROOT / module).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
            isinstance(d, ast.Call) and getattr(d.func, "id", "") == "dataclass"
            for d in node.decorator_list
        ):
            for item in node.body:
                if isinstance(item, ast.AnnAssign):
                    assert "Any" not in ast.unparse(item.annotation), (node.name, item.target)
    assert {f.name: f.type for f in dataclasses.fields(Config)}["cas"] == "Mapping[str, CAConfig]"


@pytest.mark.parametrize("module", CONFIG_MODULES)
def test_no_function_local_imports(module):
    """The import cycle config <-> config_ca <-> monitor.config_notify was dodged with local imports."""
    tree = ast.parse((ROOT / module).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                assert not isinstance(inner, ast.Import | ast.ImportFrom), (module, node.name)


@pytest.mark.parametrize(
    "first", ["monitor.config_notify", "monitor.config_ca", "monitor.config", "monitor.config_base"]
)
def test_each_config_module_imports_first(first):
    """Whatever is imported first, no partially initialised module is met (no cycle)."""
    code = f"import {first}; import monitor.config; print('ok')"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_config_base_imports_no_other_config_module():
    tree = ast.parse((ROOT / "monitor/config_base.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"monitor.config", "monitor.config_ca", "monitor.config_notify"}


def test_read_token_is_resolved_like_the_others(tmp_path, monkeypatch):
    monkeypatch.delenv("CERTD_UNSET_READ", raising=False)
    cfg = load_config(write(tmp_path, "[daemon]\napi_read_token = 'env:CERTD_UNSET_READ'\n"))
    assert cfg.secrets() == [Secret("env:CERTD_UNSET_READ", "daemon.api_read_token")]
    with pytest.raises(ConfigError, match=r"daemon\.api_read_token: .*CERTD_UNSET_READ is not set"):
        check_runtime(cfg)
