"""`check-cert` and `decode` as an operator runs them: real processes, real files, a lab box."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from expressway_certd_lab.pki import CA, SERVER_AUTH, new_key
from expressway_certd_lab.topology import Lab

from expressway_certd.renewers.expressway import (
    CsrRequest,
    ExpresswayClient,
    ExpresswayClientConfig,
)

FQDN = "expe-c1.lab.example"
SANS = [FQDN, "expressway-c.lab.example"]


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "expressway_certd.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """An X15.3 Expressway-C's current certificate, its pending CSR, and hand-made candidates."""
    d = tmp_path_factory.mktemp("hand")
    root = CA.create("Corp Root")
    issuing = CA.create("Corp Issuing", parent=root)
    other_root = CA.create("Other Root")
    other_issuing = CA.create("Other Issuing", parent=other_root)
    current, _ = issuing.issue(FQDN, SANS)
    box_key = new_key("rsa", 2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, FQDN)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in SANS]), False)
        .sign(box_key, hashes.SHA256())
    )
    pub = csr.public_key()

    def signed(ca: CA, **kw) -> x509.Certificate:
        kw.setdefault("public_key", pub)
        return ca.issue(FQDN, kw.pop("sans", SANS), **kw)[0]

    return {
        "current": write(d / "current.pem", pem(current)),
        "csr": write(d / "box.csr", csr.public_bytes(serialization.Encoding.PEM)),
        "good": write(d / "good.pem", pem(signed(issuing), *issuing.chain())),
        "missing_san": write(d / "nosan.pem", pem(signed(issuing, sans=[FQDN]), *issuing.chain())),
        "server_only": write(
            d / "server.pem", pem(signed(issuing, eku=[SERVER_AUTH]), *issuing.chain())
        ),
        "other_key": write(
            d / "otherkey.pem",
            pem(signed(issuing, public_key=new_key("ec", 256).public_key()), *issuing.chain()),
        ),
        "no_intermediate": write(d / "noint.pem", pem(signed(other_issuing), other_root.cert)),
        "new_ca": write(d / "newca.pem", pem(signed(other_issuing), *other_issuing.chain())),
    }


def offline(files, name: str, *extra: str) -> list[str]:
    return [
        "check-cert", files[name], "--against", files["current"], "--version", "X15.3",
        "--role", "c", "--csr", files["csr"], *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "check", "problem"),
    [
        ("missing_san", "sans", "san-mismatch"),
        ("server_only", "eku", "eku-missing"),
        ("other_key", "key-matches-csr", "key-mismatch"),
        ("no_intermediate", "chain", "chain-incomplete"),
    ],
)
async def test_offline_refusals(files, name, check, problem):
    code, out, err = await cli(*offline(files, name), "--json")
    assert code == 1, err
    report = json.loads(out)
    assert report["safe"] is False
    failed = {c["check"]: c["problem"] for c in report["checks"] if not c["ok"]}
    assert failed == {check: problem}


async def test_offline_refusal_as_text(files):
    code, text, _ = await cli(*offline(files, "server_only"))
    assert code == 1
    assert "FAIL  eku:" in text
    assert "TLS Web Client Authentication" in text
    assert "NOT safe to install" in text


async def test_offline_accepts_the_right_certificate(files):
    code, out, err = await cli(*offline(files, "good"))
    assert code == 0, out + err
    assert "SAFE to install" in out
    assert "Issuer unchanged" in out


async def test_offline_new_ca_lists_ciscos_step_d_and_writes_ca_files(files, tmp_path):
    code, out, err = await cli(
        *offline(files, "new_ca", "--ca-dir", str(tmp_path / "ca"), "--json")
    )
    assert code == 0, out + err
    report = json.loads(out)
    assert report["issuer_changed"] is True
    stores = [(u["store"], u["restart"]) for u in report["trust_uploads"]]
    assert stores == [
        ("Trusted CA certificate", None),
        ("Trusted CA certificate", None),
        ("tomcat-trust", "Cisco CallManager, Cisco Tomcat"),
        ("callmanager-trust", "Cisco CallManager, Cisco Tomcat"),
    ]
    written = [c["file"] for c in report["trust_uploads"][0]["certificates"]]
    assert [Path(f).name for f in written] == ["01-Other-Issuing.pem", "02-Other-Root.pem"]
    assert x509.load_pem_x509_certificate(
        Path(written[1]).read_bytes()
    ).subject.rfc4514_string() == ("CN=Other Root,O=expressway-certd lab")


async def test_offline_without_csr_is_not_safe_and_errors_are_one_line(files):
    code, out, _ = await cli("check-cert", files["good"], "--against", files["current"],
                             "--version", "X15.3", "--role", "c")  # fmt: skip
    assert code == 1
    assert "no pending CSR" in out
    code, _, err = await cli("check-cert", files["good"], "--against", files["current"])
    assert code == 2
    assert "needs --version" in err and "Traceback" not in err
    code, _, err = await cli("check-cert", files["good"], "--against", "expe-c1")
    assert code == 2
    assert "pass --config" in err


async def test_decode_prints_openssl_layout_and_escapes_hostile_subjects(tmp_path):
    ca = CA.create("Decode Root")
    hostile, _ = ca.issue("x\x1b]0;pwned\x07", ["ok.lab.example"])
    code, out, err = await cli("decode", write(tmp_path / "h.pem", pem(hostile)))
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out
    assert "Subject: O = expressway-certd lab, CN = x\\x1b]0;pwned\\x07" in out
    assert "X509v3 Subject Alternative Name:" in out
    code, out, err = await cli("check-cert", str(tmp_path / "h.pem"), "--against",
                               str(tmp_path / "h.pem"), "--version", "X15.4", "--role", "e")  # fmt: skip
    assert "\x1b" not in out + err and "\x07" not in out + err
    code, out, err = await cli(
        "decode", write(tmp_path / "k.pem", b"-----BEGIN RSA PRIVATE KEY-----\n")
    )
    assert code == 2
    assert "never reads private keys" in err


@pytest.fixture
async def lab(tmp_path: Path):
    running = await Lab(tmp_path / "lab", restart_seconds=0.2, version="X15.3").start()
    yield running
    await running.stop()


async def test_against_a_lab_box_over_its_rest_api(lab: Lab, tmp_path: Path):
    """The box's pending CSR, current certificate and trust lists come from its REST API."""
    config = str(lab.write_config(tmp_path / "certd.toml"))
    c = lab.expressway_c
    client = ExpresswayClientConfig(
        name=c.name, host=c.host, username=c.username, password=c.password,
        api_port=c.api_port, api_ca_file=lab.ca_bundle_path,
    )  # fmt: skip
    async with ExpresswayClient(client) as box:
        csr = await box.generate_csr(CsrRequest(("expressway-c.lab.example",), key_length=2048))
    served_before, installed_before = c.served_cert, c.installed.cert

    right, _ = lab.ca.issue(FQDN, SANS, public_key=csr.public_key())
    code, out, err = await cli("check-cert", write(tmp_path / "right.pem", pem(right)),
                               "--against", "expe-c1", "--config", config)  # fmt: skip
    assert code == 0, out + err
    assert "Issuer unchanged" in out

    wrong_key, _ = lab.ca.issue(FQDN, SANS)
    code, out, err = await cli("check-cert", write(tmp_path / "wrong.pem", pem(wrong_key)),
                               "--against", "expe-c1", "--config", config, "--json")  # fmt: skip
    assert code == 1, err
    assert {c["problem"] for c in json.loads(out)["checks"] if not c["ok"]} == {"key-mismatch"}

    server_only, _ = lab.ca.issue(FQDN, SANS, public_key=csr.public_key(), eku=[SERVER_AUTH])
    code, out, _ = await cli("check-cert", write(tmp_path / "so.pem", pem(server_only)),
                             "--against", "expe-c1", "--config", config, "--json")  # fmt: skip
    assert code == 1
    assert {c["problem"] for c in json.loads(out)["checks"] if not c["ok"]} == {"eku-missing"}

    new_issuing = CA.create("Hand Issuing", parent=CA.create("Hand Root"))
    moved, _ = new_issuing.issue(FQDN, SANS, public_key=csr.public_key())
    code, out, err = await cli("check-cert", write(tmp_path / "moved.pem", pem(moved, *new_issuing.chain())),
                               "--against", "expe-c1", "--config", config, "--json")  # fmt: skip
    assert code == 0, out + err
    report = json.loads(out)
    node = lab.cucm.host
    assert [(u["where"], u["store"], u["restart"]) for u in report["trust_uploads"]] == [
        ("expe-c1", "Trusted CA certificate", None),
        ("expe-e1", "Trusted CA certificate", None),
        (f"cucm1/{node}", "tomcat-trust", "Cisco CallManager, Cisco Tftp, Cisco Tomcat"),
        (f"cucm1/{node}", "callmanager-trust", "Cisco CallManager, Cisco Tftp, Cisco Tomcat"),
    ]
    # Read-only: nothing on the box changed.
    assert (c.served_cert, c.installed.cert) == (served_before, installed_before)
    assert c.pending is not None and c.uploads == 0
    assert c.password not in out + err
