"""The `inspect` and `lab` verbs, run as real processes against the lab."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from expressway_certd_lab.topology import Lab

from expressway_certd.renewers.expressway import (
    CsrRequest,
    ExpresswayClient,
    ExpresswayClientConfig,
)

CLI = [sys.executable, "-m", "expressway_certd.cli"]


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    running = await Lab(tmp_path / "lab", restart_seconds=0.2).start()
    yield running
    await running.stop()


async def test_inspect_json_has_the_documented_keys(lab: Lab, tmp_path: Path) -> None:
    config = lab.write_config(tmp_path / "certd.toml")
    c = lab.expressway_c
    client_config = ExpresswayClientConfig(
        name=c.name,
        host=c.host,
        username=c.username,
        password=c.password,
        api_port=c.api_port,
        api_ca_file=lab.ca_bundle_path,
    )
    async with ExpresswayClient(client_config) as client:
        await client.generate_csr(CsrRequest(("join.lab.example",), key_length=2048))
    code, out, err = await run_cli("inspect", "expe-c1", "--config", str(config), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["version"] == "X15.4"
    assert report["role"] == "c"
    cert = report["server_cert"]
    assert set(cert) >= {"sha256", "not_after", "sans", "eku", "aki"}
    assert cert["sans"] == ["DNS:expe-c1.lab.example", "DNS:expressway-c.lab.example"]
    assert cert["eku"] == ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]
    assert cert["not_after"].endswith("+00:00")
    assert report["pending_csr"] == {
        "subject": "CN=expe-c1.lab.example",
        "sans": ["DNS:expe-c1.lab.example", "DNS:join.lab.example"],
    }
    assert report["trusted_ca_count"] == 1
    assert report["peers"] == ["expe-c1.lab.example"]
    assert [(z["name"], z["state"]) for z in report["zones"]] == [
        ("UCTraversal", "Active"),
        ("CUCMNeighbor", "Active"),
    ]
    assert c.password not in out + err


async def test_inspect_text_and_errors(lab: Lab, tmp_path: Path) -> None:
    config = lab.write_config(tmp_path / "certd.toml")
    code, out, _ = await run_cli("inspect", "expe-e1", "--config", str(config))
    assert code == 0
    assert "expe-e1 (Expressway-E, X15.4)" in out
    assert "UCTraversal" in out
    code, _, err = await run_cli("inspect", "nope", "--config", str(config))
    assert code == 2
    assert "no [[expressway]] named 'nope'" in err


async def test_lab_verb_prints_credentials_writes_config_and_stops_on_sigint(
    tmp_path: Path,
) -> None:
    config = tmp_path / "lab.toml"
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "lab",
        "--config",
        str(config),
        "--workdir",
        str(tmp_path / "w"),
        "--restart-seconds",
        "0.2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    seen = ""
    try:
        while "Lab running" not in seen:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, f"lab exited early: {seen}"
            seen += line.decode()
        assert "password" in seen
        assert "zone UCTraversal (expe-c1 -> expe-e1): Active" in seen
        code, out, err = await run_cli("inspect", "expe-e1", "--config", str(config), "--json")
        assert code == 0, err
        assert json.loads(out)["role"] == "e"
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert "Lab stopped" in rest.decode()
