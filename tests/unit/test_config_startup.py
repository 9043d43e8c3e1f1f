"""What `run` does with a valid config before serving: private directories, warnings, data_dir."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import expressway_certd.cmd_run as cmd_run
from expressway_certd.cli import main
from expressway_certd.config import load_config
from expressway_certd.monitor.config import ensure_private_dirs, startup_warnings
from expressway_certd.monitor.errors import ConfigError
from expressway_certd.renewers.ca.base import write_private


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "certd.toml"
    path.write_text(text)
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_non_loopback_listen_without_tokens_warns(tmp_path):
    cfg = load_config(write(tmp_path, "[daemon]\nlisten = '0.0.0.0:9464'\n"))
    warnings = startup_warnings(cfg)
    assert any("no api_token is set" in w for w in warnings)
    assert any("api_read_token" in w and "CSRs" in w for w in warnings)
    cfg = load_config(write(tmp_path, "[daemon]\nlisten = '[::]:9464'\n"))
    assert len(startup_warnings(cfg)) == 2


@pytest.mark.parametrize("listen", ["127.0.0.1:9464", "[::1]:0", "localhost:9464"])
def test_loopback_listen_does_not_warn(tmp_path, listen):
    cfg = load_config(write(tmp_path, f"[daemon]\nlisten = '{listen}'\nstate = 's.db'\n"))
    assert startup_warnings(cfg) == []


def test_tokens_silence_the_listen_warnings(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            "[daemon]\nlisten = '0.0.0.0:9464'\napi_token = 'env:A'\napi_read_token = 'env:B'\n"
            "state = 's.db'\n",
        )
    )
    assert startup_warnings(cfg) == []


def test_world_readable_state_file_warns(tmp_path):
    state = tmp_path / "state.db"
    state.write_bytes(b"")
    state.chmod(0o644)
    cfg = load_config(write(tmp_path, "[daemon]\nstate = 'state.db'\n"))
    (warning,) = startup_warnings(cfg)
    assert "readable by other users (mode 0644)" in warning
    assert f"chmod 600 {state}" in warning
    state.chmod(0o600)
    assert startup_warnings(cfg) == []


def test_data_dir_and_acme_are_created_0700(tmp_path):
    data_dir = tmp_path / "deep" / "data"
    cfg = load_config(write(tmp_path, f"[daemon]\ndata_dir = '{data_dir}'\n"))
    assert ensure_private_dirs(cfg.daemon.data_dir) == []
    for path in (tmp_path / "deep", data_dir, data_dir / "acme"):
        assert mode(path) == 0o700, path


def test_existing_open_data_dir_warns(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    (warning,) = ensure_private_dirs(data_dir)
    assert "mode 0755" in warning and f"chmod 700 {data_dir}" in warning
    assert mode(data_dir / "acme") == 0o700


def test_uncreatable_data_dir_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"daemon\.data_dir: cannot create"):
        ensure_private_dirs(blocker / "data")


def test_private_files_get_0700_parents(tmp_path):
    key = tmp_path / "data" / "acme" / "le" / "account.key"
    write_private(key, b"k")
    assert mode(key) == 0o600
    for path in (tmp_path / "data", tmp_path / "data" / "acme", key.parent):
        assert mode(path) == 0o700, path


# --- 8.2: private files next to the state file ----------------------------------------------


def test_data_dir_follows_a_plain_state_path(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    a = load_config(write(tmp_path, "[daemon]\nstate = 'a/state.db'\n")).daemon
    b = load_config(write(tmp_path, f"[daemon]\nstate = '{tmp_path}/b/state.db'\n")).daemon
    c = load_config(write(tmp_path, f"[daemon]\nstate = 'sqlite:///{tmp_path}/c/x.db'\n")).daemon
    assert a.data_dir == tmp_path / "a"
    assert b.data_dir == tmp_path / "b"
    assert c.data_dir == tmp_path / "c"
    assert a.data_dir != b.data_dir  # two daemons, two ACME accounts


def test_data_dir_defaults_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    default = tmp_path / "xdg" / "expressway-certd"
    assert load_config(write(tmp_path, "")).daemon.data_dir == default
    pg = load_config(write(tmp_path, "[daemon]\nstate = 'postgresql://u@db/certd'\n")).daemon
    assert pg.data_dir == default
    explicit = load_config(
        write(tmp_path, "[daemon]\nstate = 'a/state.db'\ndata_dir = 'keys'\n")
    ).daemon
    assert explicit.data_dir == tmp_path / "keys"


def test_run_logs_the_warnings_before_serving(tmp_path, monkeypatch):
    """`run` logs exposure warnings; `serve` is replaced so nothing listens."""
    served = []

    async def fake_serve(config, **_):
        served.append(config)

    monkeypatch.setattr(cmd_run, "serve", fake_serve)
    monkeypatch.setattr(cmd_run, "configure_logging", lambda *a: None)
    path = write(tmp_path, "[daemon]\nlisten = '0.0.0.0:0'\nstate = 'st/state.db'\n")

    class Args:
        config = str(path)

    with capture_logs() as logs:
        assert cmd_run.run(Args()) == 0  # type: ignore[arg-type]
    messages = [e["message"] for e in logs if e["log_level"] == "warning"]
    assert any("no api_token is set" in m for m in messages)
    assert served and mode(tmp_path / "st" / "acme") == 0o700


def test_check_config_prints_warnings_and_hides_a_url_password(tmp_path, capsys):
    path = write(
        tmp_path,
        "[daemon]\nlisten = '0.0.0.0:9464'\nstate = 'postgresql://certd:hunter2@db/certd'\n",
    )
    assert main(["check-config", str(path)]) == 0
    captured = capsys.readouterr()
    assert "hunter2" not in captured.out + captured.err
    assert "postgresql+asyncpg://certd:***@db/certd" in captured.out
    assert "warning: daemon.listen: 0.0.0.0:9464 is reachable from other hosts" in captured.err
