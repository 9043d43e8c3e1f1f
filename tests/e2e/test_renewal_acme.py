"""ACME end to end: the daemon renews the lab's Expressway-C from a real Pebble, answering DNS-01
through a real BIND9 (RFC 2136 + TSIG). The lab's names live in BIND's test zone, so Pebble's
validation authority looks up the daemon's `_acme-challenge` TXT records there."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from expressway_certd_lab.topology import Lab

from expressway_certd.renewers.pipeline import STAGES
from tests.e2e.daemon_lab import BoxCounts, LabDaemon, daemon_config
from tests.helpers import free_port
from tests.integration.ca_servers import (
    ZONE,
    Bind9,
    Pebble,
    acme_harness,
)
from tests.keypool import KEY_POOL


async def test_acme_dns01_renewal_from_pebble(
    tmp_path: Path, pebble: Pebble, bind9: Bind9, monkeypatch: pytest.MonkeyPatch
) -> None:
    # acme_harness exports these for its connectors; keep them out of later tests
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
            trust=pebble.roots(),  # ACME sends no root: the operator trusts the CA's
        )
        env = {"CERTD_TEST_SECRET": harness.secret, "CERTD_TEST_TSIG": bind9.tsig_secret}
        async with LabDaemon(config, port, env) as daemon:
            rows = await daemon.wait_for(
                "/api/v1/renewals", lambda status, body: status == 200 and body
            )
            done = await daemon.wait_renewal(rows[0]["id"], ("done",), timeout=60)

        advanced = [s["stage"] for s in done["steps"] if s["result"] == "advance"]
        assert advanced == list(STAGES), done["steps"]
        assert BoxCounts.of(c) == BoxCounts(csrs=1, uploads=1, restarts=1)
        new = c.served_cert
        assert done["installed_sha256"] == new.fingerprint(hashes.SHA256()).hex()
        assert "Pebble" in new.issuer.rfc4514_string()
        sans = new.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted(
            [f"expe-c1.{ZONE}", lab.cluster_fqdn]
        )
        # the new CA went to the traversal peer and to Unified CM before the install
        assert done["ca_changed"] is True
        assert lab.traversal_zone.status() == ("Active", "")
        assert lab.secure_zone.status() == ("Active", "")
        # the challenge records were cleaned up
        for name in (f"expe-c1.{ZONE}", lab.cluster_fqdn):
            assert bind9.txt(f"_acme-challenge.{name}") == []
