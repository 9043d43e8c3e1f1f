"""AD CS with the stock "WebServer" template (Server Authentication only), FN74362 end to end:

- X14.3 Expressway-C, the CA's EKUs declared (`ekus = ["serverAuth"]`): refused at preflight,
  before any CSR or submission;
- X14.3 Expressway-C, EKUs not declared: the CA issues, validation refuses it before install
  (nothing uploaded, the box keeps serving the old certificate and keeps its pending CSR);
- X15.4 Expressway-E with `EnableServerEkuUpload: On` but its C on X14.3: refused at
  validation too, naming the FN74362 rule (C and E must run the same version), nothing
  installed and the traversal zones from both C peers stay Active.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from expressway_certd_lab.adcs import ADCSSimulator
from expressway_certd_lab.topology import Lab

from tests.e2e.daemon_lab import BoxCounts, LabDaemon, daemon_config
from tests.helpers import free_port
from tests.keypool import KEY_POOL

PASSWORD_ENV = "CERTD_TEST_ADCS_PASSWORD"


def adcs_tables(sim: ADCSSimulator) -> str:
    common = (
        f'kind = "adcs"\nurl = "{sim.url}"\ntemplate = "WebServer"\nauth = "ntlm"\n'
        f"username = 'CORP\\certd'\npassword = \"env:{PASSWORD_ENV}\"\n"
        f'trust_anchor = "{sim.trust_anchor}"\n'
    )
    return (
        f"\n[ca.adcs-webserver]\n{common}"
        f'\n[ca.adcs-webserver-declared]\n{common}ekus = ["serverAuth"]\n'
    )


def ekus(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


async def test_webserver_template_refused_on_x14_c_accepted_on_x15_4_e(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NTLM_USER_FILE", raising=False)  # the simulator sets it
    with ADCSSimulator() as adcs:
        async with Lab(
            tmp_path / "lab",
            csr_keys=KEY_POOL,
            c_peers=2,
            c_version="X14.3",
            e_version="X15.4",
            cert_days=10,
            restart_seconds=0.3,
            service_restart_seconds=0.05,
            e_server_eku_upload=True,
        ) as lab:
            c1, c2 = lab.expressway_c_peers
            e = lab.expressway_e
            old = {sim.name: sim.served_cert for sim in lab.expressways}
            port = free_port()
            config = daemon_config(
                lab,
                tmp_path,
                {
                    c1.name: 'ca = "adcs-webserver-declared", key_length = 2048',
                    c2.name: 'ca = "adcs-webserver", key_length = 2048',
                    e.name: 'ca = "adcs-webserver", key_length = 2048, verify_timeout = "5s"',
                },
                adcs_tables(adcs),
                port=port,
            )
            env = {PASSWORD_ENV: adcs.users["CORP\\certd"]}
            async with LabDaemon(config, port, env) as daemon:
                rows = await daemon.wait_for(
                    "/api/v1/renewals", lambda status, body: status == 200 and len(body) == 3
                )
                ids = {r["target"]: r["id"] for r in rows}
                preflight = await daemon.wait_renewal(ids[c1.name], ("blocked",), "preflight")
                validate = await daemon.wait_renewal(ids[c2.name], ("blocked",), "validate")
                e_validate = await daemon.wait_renewal(ids[e.name], ("blocked",), "validate")

            # X14.3 C, EKUs known: refused before a CSR exists or anything reaches the CA
            message = preflight["message"]
            for part in (c1.name, "'adcs-webserver-declared'", "TLS Web Client Authentication",
                         "X14.3 Expressway-C", "template"):  # fmt: skip
                assert part in message, message
            assert BoxCounts.of(c1) == BoxCounts(csrs=0, uploads=0, restarts=0)
            assert c1.pending is None and c1.served_cert == old[c1.name]

            # X14.3 C, EKUs unknown: issued, refused at validation, nothing installed
            message = validate["message"]
            for part in (c2.name, "'adcs-webserver'", "without TLS Web Client Authentication",
                         "X14.3 Expressway-C", "nothing was installed"):  # fmt: skip
                assert part in message, message
            assert BoxCounts.of(c2) == BoxCounts(csrs=1, uploads=0, restarts=0)
            assert c2.served_cert == old[c2.name] and c2.installed.cert == old[c2.name]
            assert c2.pending is not None  # never discarded

            # X15.4 E with EnableServerEkuUpload On, but its C runs X14.3: FN74362 allows a
            # serverAuth-only certificate only with C and E on the same version (issue 9)
            message = e_validate["message"]
            for part in (e.name, "without TLS Web Client Authentication", "x15.4-e-peer-version"):
                assert part in message, message
            assert BoxCounts.of(e) == BoxCounts(csrs=1, uploads=0, restarts=0)
            assert e.served_cert == old[e.name]
            for zone in lab.traversal_zones:
                assert zone.status() == ("Active", ""), zone.name

            # the CA saw exactly the C2 and E requests, both for the WebServer template
            requested = sorted(
                (r.csr.subject.rfc4514_string(), r.template, r.status)
                for r in adcs.requests.values()
            )
            assert requested == [
                (f"CN={c2.fqdn}", "WebServer", "issued"),
                (f"CN={e.fqdn}", "WebServer", "issued"),
            ]
