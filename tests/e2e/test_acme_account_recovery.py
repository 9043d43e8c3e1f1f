"""The daemon renews from a Pebble that does not know the saved ACME account (as after a CA
reset): it registers again by itself, the renewal completes, and `AcmeAccountRecreated` is in
the audit log."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from expressway_certd_lab.topology import Lab

from tests.e2e.daemon_lab import LabDaemon, daemon_config
from tests.helpers import free_port
from tests.integration.ca_servers import (
    ZONE,
    Bind9,
    Pebble,
    acme_harness,
)
from tests.keypool import KEY_POOL


def forgotten_account(data_dir: Path, pebble: Pebble, name: str) -> str:
    """An account key and URL saved by an earlier run, for an account this Pebble never had."""
    state = data_dir / "acme" / name
    state.mkdir(parents=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    (state / "account.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    uri = pebble.directory_url.removesuffix("/dir") + "/my-account/forgotten1"
    (state / "account.json").write_text(json.dumps({"directory": pebble.directory_url, "uri": uri}))
    for path in state.iterdir():
        path.chmod(0o600)
    return uri


async def test_daemon_registers_again_and_audits_it(
    tmp_path: Path, pebble: Pebble, bind9: Bind9, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CERTD_TEST_TSIG", bind9.tsig_secret)
    monkeypatch.setenv("CERTD_TEST_EAB", pebble.eab_hmac or "")
    harness = acme_harness(tmp_path, pebble, bind9)
    anchors = tmp_path / "pebble-roots.pem"
    anchors.write_bytes(b"".join(r.public_bytes(Encoding.PEM) for r in pebble.roots()))
    async with Lab(
        tmp_path / "lab",
        csr_keys=KEY_POOL,
        domain=ZONE,
        cert_days=10,
        restart_seconds=0.3,
        service_restart_seconds=0.05,
    ) as lab:
        c = lab.expressway_c
        data_dir = tmp_path / "lab" / "data"
        old_uri = forgotten_account(data_dir, pebble, harness.name)
        port = free_port()
        config = daemon_config(
            lab,
            tmp_path,
            # Pebble issues 5-year certificates; a real ACME CA 90-day ones
            {c.name: f'ca = "{harness.name}", key_length = 2048, max_lifetime = "1900d"'},
            # the operator pins Pebble's issuing root for trust distribution
            "\n"
            + harness.toml.replace(
                'kind = "acme"\n', f'kind = "acme"\ntrust_anchors = "{anchors}"\n', 1
            ),
            port=port,
            trust=pebble.roots(),
        )
        assert f'data_dir = "{data_dir}"' in config.read_text()
        env = {"CERTD_TEST_SECRET": harness.secret, "CERTD_TEST_TSIG": bind9.tsig_secret}
        async with LabDaemon(config, port, env) as daemon:
            rows = await daemon.wait_for(
                "/api/v1/renewals", lambda status, body: status == 200 and body
            )
            await daemon.wait_renewal(rows[0]["id"], ("done",), timeout=60)
            _, events = await daemon.get(f"/api/v1/events?target=ca:{harness.name}")

    [event] = [e for e in events if e["type"] == "AcmeAccountRecreated"]
    assert event["severity"] == "warning"
    payload = event["payload"]
    payload = json.loads(payload) if isinstance(payload, str) else payload
    assert payload["cause"] == "accountDoesNotExist"
    assert payload["old_account"] == old_uri
    saved = json.loads((data_dir / "acme" / harness.name / "account.json").read_text())
    assert payload["new_account"] == saved["uri"] != old_uri
    assert stat.S_IMODE((data_dir / "acme" / harness.name / "account.json").stat().st_mode) == 0o600
    assert harness.secret not in json.dumps(events)
