"""The daemon renews an Expressway through Cisco's libest `estserver` (Debian's source package
3.2.0+ds-1.1, tests/integration/libest.py), not through our EST simulator: with a CA profile
that issues what an Expressway needs, every stage runs with the certificate the real server
issued; with the example's own profile (digitalSignature only, no EKU, no SANs copied) the
renewal is blocked at validate and nothing reaches the Expressway."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from expressway_certd_lab.topology import Lab

from expressway_certd.renewers.pipeline import STAGES
from tests.e2e.daemon_lab import BoxCounts, LabDaemon, daemon_config
from tests.helpers import free_port
from tests.integration.libest import PASSWORD, USER, LibESTCA, libest_ca
from tests.keypool import KEY_POOL

__all__ = ["libest_ca"]  # the module-scoped `libest` fixture


def libest_ca_section(url: str, trust_anchor: Path, directory: Path) -> str:
    """A `[ca.libest]` table (password in a 0600 file)."""
    secret = directory / "libest.password"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(PASSWORD + "\n")
    return (
        f'\n[ca.libest]\nkind = "est"\nurl = "{url}"\ntrust_anchor = "{trust_anchor}"\n'
        f'username = "{USER}"\npassword = "file:{secret}"\n'
    )


def lab_config(lab: Lab, libest: LibESTCA, url: str, tmp_path: Path) -> tuple[Path, int]:
    """The daemon's config: Expressway-C renewed through libest, its root in the trust
    bundle (so the renewed chain verifies); and the daemon's API port."""
    root = x509.load_pem_x509_certificate(libest.cacert.read_bytes())
    port = free_port()
    config = daemon_config(
        lab,
        tmp_path,
        {lab.expressway_c.name: 'ca = "libest", key_length = 2048'},
        libest_ca_section(url, libest.cacert, tmp_path),
        port=port,
        trust=[root],
    )
    return config, port


async def test_daemon_renews_through_libest(libest: LibESTCA, tmp_path: Path) -> None:
    root = x509.load_pem_x509_certificate(libest.cacert.read_bytes())
    with libest.serve(ca_config=libest.server_profile_config()) as server:
        async with Lab(
            tmp_path / "lab",
            csr_keys=KEY_POOL,
            cert_days=10,
            restart_seconds=0.3,
            service_restart_seconds=0.05,
        ) as lab:
            c = lab.expressway_c
            config, port = lab_config(lab, libest, server.url, tmp_path)
            async with LabDaemon(config, port) as daemon:
                rows = await daemon.wait_for(
                    "/api/v1/renewals", lambda status, body: status == 200 and body
                )
                done = await daemon.wait_renewal(rows[0]["id"], ("done",))
            steps = [(s["stage"], s["result"]) for s in done["steps"]]
            assert [stage for stage, result in steps if result == "advance"] == list(STAGES)
            served = c.served_cert
            assert served.issuer == root.subject
            assert format(served.serial_number, "02X") in libest.issued()
            assert done["installed_sha256"] == served.fingerprint(hashes.SHA256()).hex()
            assert BoxCounts.of(c) == BoxCounts(csrs=1, uploads=1, restarts=1)
            assert lab.traversal_zone.status() == ("Active", "")


async def test_the_example_profile_is_refused_at_validate(libest: LibESTCA, tmp_path: Path) -> None:
    with libest.serve() as server:
        async with Lab(
            tmp_path / "lab",
            csr_keys=KEY_POOL,
            cert_days=10,
            restart_seconds=0.3,
            service_restart_seconds=0.05,
        ) as lab:
            c = lab.expressway_c
            before = c.served_cert
            config, port = lab_config(lab, libest, server.url, tmp_path)
            async with LabDaemon(config, port) as daemon:
                rows = await daemon.wait_for(
                    "/api/v1/renewals", lambda status, body: status == 200 and body
                )
                blocked = await daemon.wait_renewal(rows[0]["id"], ("blocked",))
            assert blocked["stage"] == "validate", blocked
            message = blocked["message"]
            assert "CA 'libest'" in message
            assert "Extended Key Usage" in message and "Key Encipherment" in message
            assert "nothing was installed" in message
            assert BoxCounts.of(c) == BoxCounts(csrs=1, uploads=0, restarts=0)
            assert c.served_cert == before


async def test_the_daemon_waits_as_long_as_libests_retry_after(
    libest: LibESTCA, tmp_path: Path
) -> None:
    # estserver -m 90: 202 + Retry-After: 90 to a CSR it has not seen. The renewal waits and
    # its next attempt is 90 s after the answer, not the daemon's 1 s poll interval (nor the
    # connector's 60 s default for a missing Retry-After).
    issued_before = libest.issued()
    with libest.serve("-m", "90", ca_config=libest.server_profile_config()) as server:
        async with Lab(
            tmp_path / "lab",
            csr_keys=KEY_POOL,
            cert_days=10,
            restart_seconds=0.3,
            service_restart_seconds=0.05,
        ) as lab:
            c = lab.expressway_c
            config, port = lab_config(lab, libest, server.url, tmp_path)
            async with LabDaemon(config, port) as daemon:
                rows = await daemon.wait_for(
                    "/api/v1/renewals", lambda status, body: status == 200 and body
                )
                waiting = await daemon.wait_renewal(rows[0]["id"], ("waiting",))
            submit = next(s for s in waiting["steps"] if s["stage"] == "submit")
            assert submit["message"].startswith("pending at the CA"), submit
            wait = datetime.fromisoformat(waiting["next_at"]) - datetime.fromisoformat(submit["at"])
            assert timedelta(seconds=85) <= wait <= timedelta(seconds=91), wait
            enrolls = server.log.read_text(errors="replace").count("POST /.well-known/est/simple")
            assert enrolls == 1
            assert libest.issued() == issued_before
            assert BoxCounts.of(c) == BoxCounts(csrs=1, uploads=0, restarts=0)
