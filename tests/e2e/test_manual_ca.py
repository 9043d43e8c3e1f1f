"""A CA without automation: the CSR lands in a file, the operator signs it by hand and runs
`provide`; validation, trust, install, restart and verify then continue by themselves."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from expressway_certd_lab.pki import CA, cert_pem
from expressway_certd_lab.renewal import add_renewal
from expressway_certd_lab.topology import Lab

from expressway_certd.config import load_config
from expressway_certd.monitor.events import EventBus
from expressway_certd.monitor.probe import Prober, TrustStore
from expressway_certd.monitor.store import Store
from expressway_certd.renewers.ca import build_connector
from expressway_certd.renewers.pipeline import Pipeline
from tests.keypool import KEY_POOL


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "expressway_certd.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_manual_ca_with_provide(tmp_path):
    portal_root = CA.create("Portal Root CA")
    portal = CA.create("Portal Issuing CA", parent=portal_root)
    csr_dir = tmp_path / "csrs"
    chain_file = tmp_path / "portal-chain.pem"
    chain_file.write_bytes(cert_pem(portal.cert) + cert_pem(portal_root.cert))
    async with Lab(tmp_path / "lab", csr_keys=KEY_POOL, restart_seconds=0.3) as lab:
        path = lab.write_config(tmp_path / "certd.toml")
        text = add_renewal(path.read_text(), "expe-c1", 'ca = "portal"')
        text += f'\n[ca.portal]\nkind = "manual"\ncsr_dir = "{csr_dir}"\nchain = "{chain_file}"\n'
        path.write_text(text)
        config = load_config(path)
        store = await Store.open(config.daemon.state)
        bus = EventBus()
        events = []

        async def record(event):
            events.append(event)

        bus.subscribe(record)
        connectors = {"portal": build_connector(config.cas["portal"], config.daemon.data_dir)}
        pipeline = Pipeline(
            config, store, bus, Prober(TrustStore([lab.ca_bundle_path])), connectors
        )
        try:
            row = await pipeline.start("expe-c1", "test")
            row = await pipeline.run(row.id)
            assert (row.status, row.stage) == ("waiting", "issued")
            (csr_file,) = csr_dir.glob("*.csr")
            waiting = [e for e in events if e.type == "StageWaiting"]
            assert str(csr_file) in waiting[0].why and "provide" in waiting[0].why

            code, out, _ = await cli("status", "expe-c1", "--config", str(path), "--json")
            assert "BEGIN CERTIFICATE REQUEST" in out

            # The operator signs the CSR on the portal ...
            csr = x509.load_pem_x509_csr(csr_file.read_bytes())
            names = [
                n.value
                for n in csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            ]
            leaf, _ = portal.issue(names[0], names, public_key=csr.public_key())
            wrong, _ = portal.issue(names[0], names)
            (tmp_path / "leaf.pem").write_bytes(cert_pem(leaf))
            (tmp_path / "wrong.pem").write_bytes(cert_pem(wrong))

            # ... a certificate for another key is refused at once
            code, _, err = await cli(
                "provide", row.id, "--config", str(path), "--cert", str(tmp_path / "wrong.pem")
            )
            assert code == 2 and "not for this renewal's CSR" in err
            code, out, err = await cli(
                "provide", row.id, "--config", str(path), "--cert", str(tmp_path / "leaf.pem")
            )
            assert code == 0, err

            row = await pipeline.run(row.id)
            assert row.status == "done", row.message
            assert lab.expressway_c.served_cert == leaf
            assert portal_root.cert in lab.expressway_e.trusted_cas
            assert lab.traversal_zone.status()[0] == "Active"
        finally:
            for connector in connectors.values():
                await connector.aclose()
            await store.close()


async def test_provide_with_a_rogue_chain_plants_no_ca(tmp_path):
    """Issue 13, finding 2: `provide --chain rogue.pem` must not put the rogue CA into any
    trust store (approval auto): the chain does not lead to the root pinned for the CA."""
    portal_root = CA.create("Portal Root CA")
    chain_file = tmp_path / "portal-chain.pem"
    chain_file.write_bytes(cert_pem(portal_root.cert))
    rogue_root = CA.create("Portal Root CA")  # same name, another key
    rogue = CA.create("Rogue Issuing CA", parent=rogue_root)
    async with Lab(tmp_path / "lab", csr_keys=KEY_POOL, restart_seconds=0.3) as lab:
        path = lab.write_config(tmp_path / "certd.toml")
        text = add_renewal(path.read_text(), "expe-c1", 'ca = "portal", approval = "auto"')
        text += f'\n[ca.portal]\nkind = "manual"\ncsr_dir = "{tmp_path / "csrs"}"\nchain = "{chain_file}"\n'
        path.write_text(text)
        config = load_config(path)
        store = await Store.open(config.daemon.state)
        connectors = {"portal": build_connector(config.cas["portal"], config.daemon.data_dir)}
        pipeline = Pipeline(
            config, store, EventBus(), Prober(TrustStore([lab.ca_bundle_path])), connectors
        )
        c, e, cucm = lab.expressway_c, lab.expressway_e, lab.cucm
        before = (
            list(c.trusted_cas),
            list(e.trusted_cas),
            {k: list(v) for k, v in cucm.trust.items()},
        )
        try:
            row = await pipeline.run((await pipeline.start("expe-c1", "test")).id)
            csr = x509.load_pem_x509_csr(row.data["csr_pem"].encode())
            names = [
                n.value
                for n in csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            ]
            leaf, _ = rogue.issue(names[0], names, public_key=csr.public_key())
            (tmp_path / "leaf.pem").write_bytes(cert_pem(leaf))
            (tmp_path / "rogue.pem").write_bytes(cert_pem(rogue.cert) + cert_pem(rogue_root.cert))
            code, _, err = await cli(
                "provide", row.id, "--config", str(path),
                "--cert", str(tmp_path / "leaf.pem"), "--chain", str(tmp_path / "rogue.pem"),
            )  # fmt: skip
            assert code == 0, err

            row = await pipeline.run(row.id)
            assert (row.status, row.stage) == ("blocked", "validate"), row.message
            # refused as a chain that builds to no configured anchor (the rogue root is in
            # neither the trust bundle nor the CA's pinned trust_anchors)
            assert row.message.startswith("expe-c1: ")
            assert "CN=Rogue Issuing CA" in row.message
            assert "not in the trust bundle" in row.message
            assert "trust_anchors" in row.message and "provide" in row.message
            after = (
                list(c.trusted_cas),
                list(e.trusted_cas),
                {k: list(v) for k, v in cucm.trust.items()},
            )
            assert after == before
            assert rogue.cert not in c.trusted_cas and rogue_root.cert not in e.trusted_cas
            assert (c.uploads, c.restart_count) == (0, 0)
            assert sum(cucm.restarts.values()) == 0
        finally:
            for connector in connectors.values():
                await connector.aclose()
            await store.close()


def forged_issuer(root: CA, old: x509.Certificate) -> CA:
    """A rogue issuing CA posing as the box's current CA: same subject, and a subject key
    identifier set to the current certificate's AKI (both are only extension values)."""
    aki = old.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier is not None
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(old.issuer)
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(x509.SubjectKeyIdentifier(aki.key_identifier), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()),  # type: ignore[arg-type]
            False,
        )
        .sign(root.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return CA(old.issuer.rfc4514_string(), key, cert, parent=root)


def forged_leaf(
    issuer: CA, names: list[str], public_key: object, copied_aki: x509.AuthorityKeyIdentifier
) -> x509.Certificate:
    """A leaf signed by `issuer` that claims, through a copied AKI, the box's current CA."""
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(issuer.cert.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            False,
        )
        .add_extension(copied_aki, False)
        .sign(issuer.key, hashes.SHA256())  # type: ignore[arg-type]
    )


async def test_a_forged_aki_does_not_pass_as_the_same_ca(tmp_path):
    """Issue 13, the rest of finding 2's class: a rogue leaf that copies the current
    certificate's AKI (so "the CA did not change" and no pinned root is asked for), handed in
    with its own self-signed chain, is refused at validate: the chain must build to an anchor
    the operator configured, not to a root the answer brought along."""
    rogue_root = CA.create("Rogue Root CA")
    async with Lab(tmp_path / "lab", csr_keys=KEY_POOL, restart_seconds=0.3) as lab:
        rogue = forged_issuer(rogue_root, lab.expressway_c.served_cert)
        path = lab.write_config(tmp_path / "certd.toml")
        text = add_renewal(path.read_text(), "expe-c1", 'ca = "portal", approval = "auto"')
        text += f'\n[ca.portal]\nkind = "manual"\ncsr_dir = "{tmp_path / "csrs"}"\n'
        path.write_text(text)
        config = load_config(path)
        store = await Store.open(config.daemon.state)
        connectors = {"portal": build_connector(config.cas["portal"], config.daemon.data_dir)}
        pipeline = Pipeline(
            config, store, EventBus(), Prober(TrustStore([lab.ca_bundle_path])), connectors
        )
        c = lab.expressway_c
        old = c.served_cert
        try:
            row = await pipeline.run((await pipeline.start("expe-c1", "test")).id)
            csr = x509.load_pem_x509_csr(row.data["csr_pem"].encode())
            names = [
                n.value
                for n in csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            ]
            aki = old.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
            leaf = forged_leaf(rogue, names, csr.public_key(), aki)
            (tmp_path / "leaf.pem").write_bytes(cert_pem(leaf))
            (tmp_path / "rogue.pem").write_bytes(cert_pem(rogue.cert) + cert_pem(rogue_root.cert))
            code, _, err = await cli(
                "provide", row.id, "--config", str(path),
                "--cert", str(tmp_path / "leaf.pem"), "--chain", str(tmp_path / "rogue.pem"),
            )  # fmt: skip
            assert code == 0, err

            row = await pipeline.run(row.id)
            assert (row.status, row.stage) == ("blocked", "validate"), row.message
            assert "the issued chain does not build" in row.message
            assert (c.uploads, c.restart_count) == (0, 0)
            assert c.served_cert == old and c.installed.cert == old
            assert rogue_root.cert not in c.trusted_cas
        finally:
            for connector in connectors.values():
                await connector.aclose()
            await store.close()
