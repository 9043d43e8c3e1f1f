"""For each connector: a process submits and exits before issuance; the next process finishes
the same request from the handle, and the CA sees one submission. Also the `sign` and
`ca-check` commands end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from expressway_certd.cli import main
from expressway_certd.renewers.ca.base import Issued
from tests.integration.ca_servers import (  # noqa: F401 - fixtures
    Harness,
    harness_fixture,
    make_csr,
    until_issued,
)
from tests.integration.libest import libest_ca  # noqa: F401 - the `libest` fixture

pytestmark = pytest.mark.integration


def cli(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "expressway_certd.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
        check=False,
    )


def write_csr(tmp_path: Path, harness: Harness) -> tuple[Path, x509.CertificateSigningRequest]:
    csr = make_csr(*harness.names())
    path = tmp_path / "expe.csr"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path, csr


async def test_next_process_finishes_the_request_without_a_second_submission(
    harness: Harness, tmp_path: Path
) -> None:
    harness.set_manual(True)
    config = harness.write_config(tmp_path)
    csr_file, csr = write_csr(tmp_path, harness)
    handle_file = tmp_path / "handle.json"

    first = cli("sign", "--config", config, "--ca", harness.name, "--csr", csr_file,
                "--no-wait", "--handle-out", handle_file)  # fmt: skip
    assert first.returncode == 3, first.stderr
    assert "pending" in first.stderr and "--resume" in first.stderr
    handle = json.loads(handle_file.read_text())

    harness.approve()
    conn = harness.connector()
    issued = await until_issued(conn, await conn.poll(handle))
    assert isinstance(issued, Issued)
    assert issued.leaf.public_key() == csr.public_key()
    if harness.kind == "acme":
        # The order the first process created is the one that was finalized.
        assert conn.request_count("new_order") == 0
        assert handle["order_url"] and handle["presented"]
        assert harness.server.roots()
    else:
        assert harness.ca_submissions() == 1
    if harness.kind == "adcs":
        assert conn.request_count("submit") == 0


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """The CLI in this process (the simulators serve from their own threads)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_sign_resume_writes_leaf_and_chain(
    harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    harness.set_manual(True)
    config = harness.write_config(tmp_path)
    csr_file, csr = write_csr(tmp_path, harness)
    handle_file = tmp_path / "handle.json"
    code, _, err = run_cli(capsys, "sign", "--config", config, "--ca", harness.name,
                           "--csr", csr_file, "--no-wait", "--handle-out", handle_file)  # fmt: skip
    assert code == 3, err
    harness.approve()
    out, chain_out = tmp_path / "leaf.pem", tmp_path / "chain.pem"
    code, _, err = run_cli(capsys, "sign", "--config", config, "--ca", harness.name,
                           "--resume", handle_file, "--out", out, "--chain-out", chain_out,
                           "--wait", "30s")  # fmt: skip
    assert code == 0, err
    leaf = x509.load_pem_x509_certificate(out.read_bytes())
    assert leaf.public_key() == csr.public_key()
    chain = x509.load_pem_x509_certificates(chain_out.read_bytes())
    leaf.verify_directly_issued_by(chain[0])
    assert "issued by CA" in err
    if harness.ca_submissions() is not None:
        assert harness.ca_submissions() == 1


def test_sign_waits_with_progress(
    harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    harness.set_manual(True)
    config = harness.write_config(tmp_path)
    csr_file, _ = write_csr(tmp_path, harness)
    approver = threading.Timer(1.0, harness.approve)
    approver.start()  # a CA manager approves while the command waits
    code, out, err = run_cli(capsys, "sign", "--config", config, "--ca", harness.name,
                             "--csr", csr_file, "--wait", "30s", "--poll-every", "1s")  # fmt: skip
    approver.join()
    assert code == 0, err
    assert out.startswith("-----BEGIN CERTIFICATE-----")
    if harness.kind != "acme":
        assert f"waiting for CA '{harness.name}'" in err


def test_ca_check(harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        capsys, "ca-check", harness.name, "--config", harness.write_config(tmp_path)
    )
    assert code == 0, out + err
    assert f"CA {harness.name} ({harness.kind})" in out
    assert "FAIL" not in out


def test_ca_check_reports_bad_credentials(
    harness: Harness,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if harness.kind == "acme":
        pytest.skip("an ACME account needs no credentials after registration")
    monkeypatch.setenv("CERTD_TEST_SECRET", "not-the-password")
    code, out, err = run_cli(
        capsys, "ca-check", harness.name, "--config", harness.write_config(tmp_path)
    )
    assert code == 1
    assert "FAIL" in out
    assert "not-the-password" not in out + err


def test_unknown_ca_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[daemon]\ndata_dir = "{tmp_path}"\n')
    code, _, err = run_cli(capsys, "ca-check", "nope", "--config", config)
    assert code == 2
    assert "no [ca.nope] table" in err
