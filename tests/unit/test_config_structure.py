"""How the config code is built (issue 10): defaults written once, typed, no import cycle."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from expressway_certd import config_docs
from expressway_certd.config import REGISTRY, load_config
from expressway_certd.monitor import config_docs as monitor_docs
from expressway_certd.monitor.config import (
    Config,
    DaemonConfig,
    ExpresswayConfig,
    MaintenanceWindow,
    RenewalConfig,
    UnifiedCMConfig,
    check_runtime,
)
from expressway_certd.monitor.config_base import Secret, declared, toml_keys
from expressway_certd.monitor.config_ca import CACommon, CALimits
from expressway_certd.monitor.config_notify import NOTIFIER_CLASSES, NotifierIdentity, Routing
from expressway_certd.monitor.errors import ConfigError
from expressway_certd.renewers.ca.acme_config import RFC2136Config

ROOT = Path(__file__).parents[2]
CONFIG_MODULES = ["monitor/config_base.py", "monitor/config.py", "monitor/config_ca.py",
                  "monitor/config_notify.py", "renewers/ca/acme_config.py",
                  "renewers/ca/est_config.py", "renewers/ca/adcs_config.py",
                  "renewers/ca/manual_config.py", "expressway_certd/config.py"]  # fmt: skip


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
    "first",
    [
        "expressway_certd.monitor.config_notify",
        "expressway_certd.monitor.config_ca",
        "expressway_certd.monitor.config",
        "expressway_certd.monitor.config_base",
    ],
)
def test_each_config_module_imports_first(first):
    """Whatever is imported first, no partially initialised module is met (no cycle)."""
    code = f"import {first}; import expressway_certd.monitor.config; print('ok')"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_config_base_imports_no_other_config_module():
    tree = ast.parse((ROOT / "monitor/config_base.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {
        "expressway_certd.monitor.config",
        "expressway_certd.monitor.config_ca",
        "expressway_certd.monitor.config_notify",
    }


def test_read_token_is_resolved_like_the_others(tmp_path, monkeypatch):
    monkeypatch.delenv("CERTD_UNSET_READ", raising=False)
    cfg = load_config(write(tmp_path, "[daemon]\napi_read_token = 'env:CERTD_UNSET_READ'\n"))
    assert cfg.secrets() == [Secret("env:CERTD_UNSET_READ", "daemon.api_read_token")]
    with pytest.raises(ConfigError, match=r"daemon\.api_read_token: .*CERTD_UNSET_READ is not set"):
        check_runtime(cfg)


# --- declarations and the generated docs ------------------------------------------------------


def test_committed_key_tables_are_current():
    """Regenerate with: python -m expressway_certd.config_docs docs/configuration.md"""
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert config_docs.render(text) == text
    assert sorted(monitor_docs.markers(text)) == sorted(config_docs.tables())


def test_a_changed_declaration_changes_the_docs():
    text = "<!-- keys: daemon -->\nstale\n<!-- end keys -->\n"
    rendered = config_docs.render(text)
    assert "stale" not in rendered
    assert '| `poll_interval` | `"5m"` | how often' in rendered
    assert "| `listen` |" in rendered and "listen_port" not in rendered


def test_a_ca_keys_doc_changed_in_the_file_alone_is_stale():
    """The CA kinds' tables are covered too: a row edited by hand (or a declaration changed
    without regenerating) makes the committed file differ from what is generated."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    row = '| `operation` | `"simpleenroll"` | the enrollment request: '
    assert row in text
    edited = text.replace(row, row.replace("the enrollment request", "the request"))
    assert config_docs.render(edited) != edited
    assert config_docs.render(edited) == text


def test_every_declared_ca_key_is_in_the_committed_file():
    text = (ROOT / "docs" / "configuration.md").read_text()
    sections = [CACommon, CALimits, *(kind.config for kind in REGISTRY)]
    sections += [cls for kind in REGISTRY for _, cls in config_docs.subtables(kind.config, "")]
    assert RFC2136Config in sections
    for cls in sections:
        for f in declared(cls):
            assert monitor_docs.row(f) in text, (cls.__name__, f.name)


def test_the_command_rewrites_a_stale_file(tmp_path):
    committed = (ROOT / "docs" / "configuration.md").read_text()
    doc = tmp_path / "configuration.md"
    stale = committed.replace('| `poll` | `"5m"` |', '| `poll` | `"1m"` |')
    assert stale != committed
    doc.write_text(stale)
    result = subprocess.run(
        [sys.executable, "-m", "expressway_certd.config_docs", str(doc)],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    assert doc.read_text() == committed


def test_the_command_names_a_table_that_has_no_place(tmp_path, capsys):
    committed = (ROOT / "docs" / "configuration.md").read_text()
    start = committed.index("<!-- keys: ca-kind-manual -->")
    end = committed.index("<!-- end keys -->", start) + len("<!-- end keys -->")
    doc = tmp_path / "configuration.md"
    doc.write_text(committed[:start] + committed[end:])
    assert config_docs.main([str(doc)]) == 1
    assert "no place for ca-kind-manual: write '<!-- keys: NAME -->'" in capsys.readouterr().err


def test_a_marker_without_a_declared_section_is_an_error():
    with pytest.raises(KeyError, match="ca-kind-scpe"):
        config_docs.render("<!-- keys: ca-kind-scpe -->\n<!-- end keys -->\n")


def test_secret_keys_say_so():
    """A key held as a Secret is documented as a secret reference (env:/file:), in every
    section the docs show."""
    sections = [cls for classes, _ in monitor_docs.SECTIONS.values() for cls in classes]
    sections += [CACommon, *(kind.config for kind in REGISTRY)]
    sections += [cls for kind in REGISTRY for _, cls in config_docs.subtables(kind.config, "")]
    for cls in sections:
        for f in declared(cls):
            if str(f.type) in ("Secret", "Secret | None"):
                assert f.metadata["doc"].startswith("secret reference"), (cls.__name__, f.name)


def test_known_keys_come_from_the_declarations():
    assert toml_keys(DaemonConfig) >= {"listen", "state", "data_dir", "api_read_token"}
    assert "listen_host" not in toml_keys(DaemonConfig)
    assert toml_keys(UnifiedCMConfig) == {
        "name", "nodes", "username", "password", "api_port", "soap_port", "ssh_port", "sip_tls_port",
        "api_ca_file", "ssh_known_hosts", "trust_stores", "restart_services",
        "maintenance_window",
    }  # fmt: skip
    assert toml_keys(ExpresswayConfig) == {
        "name", "address", "role", "endpoints", "cluster", "version", "username", "password",
        "api_port", "api_ca_file", "ca_file", "ssh_port", "ssh_known_hosts", "traversal_peer",
        "unified_cm", "renewal",
    }  # fmt: skip
    assert toml_keys(RenewalConfig) == {
        "ca", "renew_before", "approval", "maintenance_window", "extra_sans", "key_length",
        "digest", "subject", "verify_timeout", "max_lifetime", "require_eku", "client_ca",
    }  # fmt: skip


def test_notifier_keys_come_from_the_declarations():
    assert toml_keys(NotifierIdentity) | toml_keys(Routing) == {
        "name", "kind", "events", "min_severity", "throttle", "timeout", "retries",
    }  # fmt: skip
    assert {kind: toml_keys(cls) for kind, cls in NOTIFIER_CLASSES.items()} == {
        "alertmanager": {"url", "trust_anchor", "resolve_timeout"},
        "webex": {"token", "room_id", "api_url", "trust_anchor"},
        "webhook": {"url", "secret", "headers", "trust_anchor"},
        "email": {"host", "port", "starttls", "username", "password", "from", "to", "trust_anchor"},
    }


def test_declared_key_is_accepted_and_unknown_one_refused(tmp_path):
    for name in toml_keys(DaemonConfig):
        (tmp_path / "certd.toml").write_text(f"[daemon]\n{name}x = 1\n")
        with pytest.raises(ConfigError, match=rf"daemon\.{name}x: unknown key"):
            load_config(tmp_path / "certd.toml")
