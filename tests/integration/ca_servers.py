"""Real CA servers and lab simulators for the CA connector tests: BIND9 (RFC 2136 + TSIG),
Pebble (ACME) pointed at that BIND9, the lab EST CA, the lab AD CS certsrv, and for the
manual kind an operator who signs the CSR file with a lab CA.

Pebble and BIND9 start once per session; simulators per test. A test module imports the
fixture functions it uses (`bind9_server`, `pebble_server`, `harness_fixture`, ...); their
fixture names are `bind9`, `pebble`, `harness` (the kinds that talk to a CA server) and `ca`
(every kind, manual included).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.tsigkeyring
import dns.update
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from expressway_certd_lab.adcs import TEXT, ADCSSimulator
from expressway_certd_lab.est import ESTSimulator
from expressway_certd_lab.pki import CA, SERVER_AUTH, cert_pem, write_key_and_chain

from expressway_certd.monitor.config import Secret
from expressway_certd.monitor.config_ca import CAConfig
from expressway_certd.renewers.ca.acme import ACMEConnector
from expressway_certd.renewers.ca.acme_config import ACMEConfig, RFC2136Config
from expressway_certd.renewers.ca.adcs import ADCSConnector
from expressway_certd.renewers.ca.adcs_config import ADCSConfig
from expressway_certd.renewers.ca.base import CAConnector, Issued, Pending
from expressway_certd.renewers.ca.est import ESTConnector
from expressway_certd.renewers.ca.est_config import ESTConfig
from expressway_certd.renewers.ca.manual import ManualConnector
from expressway_certd.renewers.ca.manual_config import ManualConfig
from tests.helpers import free_port, need_binary
from tests.integration.libest import PASSWORD as LIBEST_PASSWORD
from tests.integration.libest import USER as LIBEST_USER
from tests.integration.libest import LibESTCA, LibESTServer

ZONE = "lab.test"
TSIG_KEY = "certd-key"


def wait_port(
    port: int, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}: {log.read_text()[-2000:]}")


def make_csr(
    *names: str, key: ec.EllipticCurvePrivateKey | None = None
) -> x509.CertificateSigningRequest:
    """A CSR as the Expressway makes it: CN = first name, every name in the SAN."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )


@dataclass
class Bind9:
    port: int
    tsig_secret: str
    directory: Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    def add_a(self, name: str, address: str = "127.0.0.1") -> None:

        update = dns.update.UpdateMessage(
            ZONE + ".",
            keyring=dns.tsigkeyring.from_text({TSIG_KEY: self.tsig_secret}),
            keyalgorithm="hmac-sha256",
        )
        update.replace(name.removesuffix("." + ZONE), 60, "A", address)
        dns.query.tcp(update, "127.0.0.1", port=self.port, timeout=5)

    def txt(self, name: str) -> list[str]:

        response = dns.query.tcp(
            dns.message.make_query(name, "TXT"), "127.0.0.1", port=self.port, timeout=5
        )
        return [b"".join(r.strings).decode() for rrset in response.answer for r in rrset]


@pytest.fixture(scope="session", name="bind9")
def bind9_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bind9]:
    named = need_binary("named")
    directory = tmp_path_factory.mktemp("bind9")
    port = free_port()
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    (directory / f"{ZONE}.zone").write_text(
        f"$TTL 60\n@ IN SOA ns.{ZONE}. admin.{ZONE}. 1 60 60 600 60\n"
        f"@ IN NS ns.{ZONE}.\nns IN A 127.0.0.1\n"
    )
    conf = directory / "named.conf"
    conf.write_text(
        f"""
key "{TSIG_KEY}" {{ algorithm hmac-sha256; secret "{secret}"; }};
options {{
    directory "{directory}";
    pid-file "{directory}/named.pid";
    session-keyfile "{directory}/session.key";
    managed-keys-directory "{directory}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
zone "{ZONE}" {{ type primary; file "{directory}/{ZONE}.zone"; allow-update {{ key "{TSIG_KEY}"; }}; }};
"""
    )
    log = directory / "named.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [named, "-g", "-n", "1", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_port(port, proc, "named", log)
        yield Bind9(port, secret, directory, proc)
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class Pebble:
    directory_url: str
    management_url: str
    trust_anchor: Path  # verifies Pebble's own HTTPS
    http_port: int
    eab_kid: str | None
    eab_hmac: str | None
    proc: subprocess.Popen[bytes] = field(repr=False)
    argv: list[str] = field(default_factory=list, repr=False)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    log: Path = field(default=Path("/dev/null"), repr=False)

    def restart(self) -> None:
        """Stop and start Pebble on the same ports: it keeps accounts and orders in memory
        only, so the new process has forgotten every account, as a reset CA has."""
        self.proc.terminate()
        self.proc.wait(10)
        self.proc = _spawn_pebble(self.argv, self.env, self.log)
        for url in (self.directory_url, self.management_url):
            port = int(url.split(":")[2].split("/")[0])
            wait_port(port, self.proc, "pebble", self.log)

    def roots(self) -> list[x509.Certificate]:
        text = requests.get(
            f"{self.management_url}/roots/0", verify=str(self.trust_anchor), timeout=5
        ).text
        return x509.load_pem_x509_certificates(text.encode())


def _spawn_pebble(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)


def start_pebble(
    directory: Path, dns_port: int | None, *, env: dict[str, str] | None = None, eab: bool = False
) -> Pebble:
    """Pebble on random loopback ports with its own HTTPS cert; `dns_port`: resolver for its VA."""
    pebble = need_binary("pebble")
    ca = CA.create("Pebble HTTPS test CA")
    leaf, key = ca.issue(
        "localhost", ["localhost", "127.0.0.1"], eku=[SERVER_AUTH], key_kind="ec", key_size=256
    )
    assert key is not None
    cert_file, key_file = write_key_and_chain(directory, "pebble-https", leaf, key, [])
    anchor = ca.write_bundle(directory / "pebble-https-root.pem")
    port, mport, http_port = free_port(), free_port(), free_port()
    kid, hmac = (
        ("certd-kid", base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode())
        if eab
        else (None, None)
    )
    config: dict[str, object] = {
        "listenAddress": f"127.0.0.1:{port}",
        "managementListenAddress": f"127.0.0.1:{mport}",
        "certificate": str(cert_file),
        "privateKey": str(key_file),
        "httpPort": http_port,
        "tlsPort": free_port(),
        "ocspResponderURL": "",
        "externalAccountBindingRequired": eab,
    }
    if eab:
        config["externalAccountMACKeys"] = {kid: hmac}
    conf = directory / "pebble.json"
    conf.write_text(json.dumps({"pebble": config}))
    log = directory / "pebble.log"
    full_env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_AUTHZREUSE": "0", **(env or {})}
    argv = [pebble, "-config", str(conf), "-strict"] + (
        ["-dnsserver", f"127.0.0.1:{dns_port}"] if dns_port else []
    )
    proc = _spawn_pebble(argv, full_env, log)
    wait_port(port, proc, "pebble", log)
    wait_port(mport, proc, "pebble management", log)
    return Pebble(
        f"https://127.0.0.1:{port}/dir",
        f"https://127.0.0.1:{mport}",
        anchor,
        http_port,
        kid,
        hmac,
        proc,
        argv,
        full_env,
        log,
    )


@pytest.fixture(scope="session", name="pebble")
def pebble_server(tmp_path_factory: pytest.TempPathFactory, bind9: Bind9) -> Iterator[Pebble]:
    server = start_pebble(tmp_path_factory.mktemp("pebble"), bind9.port, eab=True)
    try:
        yield server
    finally:
        server.proc.terminate()
        server.proc.wait(10)


@pytest.fixture(scope="session", name="pebble_nonce_reject")
def pebble_nonce_reject_server(
    tmp_path_factory: pytest.TempPathFactory, bind9: Bind9
) -> Iterator[Pebble]:
    server = start_pebble(
        tmp_path_factory.mktemp("pebble-nonce"), bind9.port, env={"PEBBLE_WFE_NONCEREJECT": "40"}
    )
    try:
        yield server
    finally:
        server.proc.terminate()
        server.proc.wait(10)


@dataclass
class Harness:
    """One CA connector kind against its server, as the contract suite drives it."""

    kind: str
    name: str
    server: Any  # ESTSimulator, ADCSSimulator or Pebble
    data_dir: Path
    make_config: Callable[[str, Path | None], CAConfig]  # (password env var, trust anchor)
    set_manual: Callable[[bool], None]  # CA approval needed from now on
    approve: Callable[[], None]  # approve what is waiting
    ca_submissions: Callable[[], int | None]  # None when the CA cannot tell
    submit_op: str = "submit"  # the metric op of a new submission
    secret: str = ""  # the right value of the secret under password_env
    toml: str = ""  # the [ca.NAME] table(s) for a config file, secrets as env: references
    connectors: list[Any] = field(default_factory=list)
    poll_resubmits: bool = False  # EST continues a request by sending the same CSR again
    wrong_secret: str = "Wr0ng-" + "x" * 30  # a wrong value the secret's syntax allows
    # From a submit/poll result to the certificate: poll the CA (or, manual: the operator signs)
    finish: Callable[[Any, Issued | Pending], Awaitable[Issued]] | None = None
    # From now on the CA issues with the first DNS name only (None: this CA cannot; ACME's
    # finalize refuses a CSR whose names differ from the order's, so Pebble never drops one)
    drop_sans: Callable[[], None] | None = None
    # From now on the CA returns its certificates in an order of its own (root first) / a
    # certificate for a key of its own, not the CSR's (None: this CA cannot be made to)
    misorder: Callable[[], None] | None = None
    other_key: Callable[[], None] | None = None
    # The [ca.NAME] table as of now, when it follows set_manual/drop_sans (else `toml`)
    toml_of: Callable[[], str] | None = None
    # The CA forgets the requests it holds (a reset CA); None: the simulator's `requests.clear`
    forget: Callable[[], None] | None = None

    async def issued(self, conn: Any, result: Issued | Pending) -> Issued:
        """The certificate a submit/poll result leads to, the way this kind gets there."""
        if self.finish is not None:
            return await self.finish(conn, result)
        return await until_issued(conn, result)

    def write_config(self, directory: Path) -> Path:
        path = directory / "certd.toml"
        toml = self.toml_of() if self.toml_of is not None else self.toml
        path.write_text(f'[daemon]\ndata_dir = "{self.data_dir}"\n\n{toml}')
        return path

    def names(self) -> list[str]:
        host = f"exp-{secrets.token_hex(4)}.{ZONE}"
        return [host, f"alt-{secrets.token_hex(3)}.{ZONE}"]

    def connector(
        self,
        *,
        wait: float = 30,
        password_env: str = "CERTD_TEST_SECRET",
        trust_anchor: Path | None = None,
    ) -> Any:  # the concrete connector, so tests can read request_count()
        config = self.make_config(password_env, trust_anchor)
        conn: ACMEConnector | ESTConnector | ADCSConnector | ManualConnector
        if isinstance(config, ACMEConfig):
            conn = ACMEConnector(config, data_dir=self.data_dir, wait=timedelta(seconds=wait))
        elif isinstance(config, ManualConfig):
            conn = ManualConnector(config, data_dir=self.data_dir)
        elif isinstance(config, ESTConfig):
            conn = ESTConnector(config, data_dir=self.data_dir)
        else:
            conn = ADCSConnector(config, data_dir=self.data_dir)
        self.connectors.append(conn)
        return conn


def est_harness(tmp_path: Path) -> Iterator[Harness]:

    with ESTSimulator() as sim:

        def config(env: str, anchor: Path | None) -> ESTConfig:
            return ESTConfig(
                "lab-est",
                sim.url,
                trust_anchor=anchor or sim.trust_anchor,
                username="est",
                password=Secret(f"env:{env}"),
            )

        def manual(on: bool) -> None:
            sim.manual_approval = on

        toml = f"""[ca.lab-est]
kind = "est"
url = "{sim.url}"
trust_anchor = "{sim.trust_anchor}"
username = "est"
password = "env:CERTD_TEST_SECRET"
"""
        yield Harness(
            "est",
            "lab-est",
            sim,
            tmp_path,
            config,
            manual,
            sim.approve_all,
            lambda: sim.submissions,
            "simpleenroll",
            "est-secret",
            toml,
            poll_resubmits=True,
            drop_sans=lambda: setattr(sim, "drop_sans", True),
            misorder=lambda: setattr(sim, "misorder", True),
            other_key=lambda: setattr(sim, "other_key", True),
        )


def libest_harness(tmp_path: Path, libest: LibESTCA) -> Iterator[Harness]:
    """Cisco's libest estserver (tests/integration/libest.py) as a contract CA. Its servers
    start when a connector first needs them: one whose CA copies the CSR's extensions (an
    operator's `copy_extensions = copy`), one with manual enrollment (`-m 60`: 202 +
    Retry-After until the same CSR comes again) and one with the example's own CA profile,
    which copies no extension (every SAN dropped). The CA cannot count submissions; what it
    issued (its index.txt) stands in: a CSR sent again while pending is issued once."""
    state = {"manual": False, "drop": False}
    issued_before = len(libest.issued())
    with contextlib.ExitStack() as stack:
        servers: dict[tuple[bool, bool], LibESTServer] = {}

        def url() -> str:
            which = (state["manual"], state["drop"])
            if which not in servers:
                flags = ("-m", "60") if state["manual"] else ()
                config = "estExampleCA.cnf" if state["drop"] else libest.copying_config()
                servers[which] = stack.enter_context(libest.serve(*flags, ca_config=config))
            return servers[which].url

        def config(env: str, anchor: Path | None) -> ESTConfig:
            return ESTConfig(
                "libest",
                url(),
                trust_anchor=anchor or libest.cacert,
                username=LIBEST_USER,
                password=Secret(f"env:{env}"),
            )

        def manual(on: bool) -> None:
            state["manual"] = on

        def forget() -> None:
            """estserver keeps the CSRs its -m mode has seen in memory only."""
            for server in servers.values():
                server.restart()

        def toml() -> str:
            return (
                f'[ca.libest]\nkind = "est"\nurl = "{url()}"\n'
                f'trust_anchor = "{libest.cacert}"\nusername = "{LIBEST_USER}"\n'
                'password = "env:CERTD_TEST_SECRET"\n'
            )

        yield Harness(
            "est",
            "libest",
            libest,
            tmp_path,
            config,
            manual,
            lambda: None,  # libest's -m enrolls a CSR the second time it is sent
            lambda: len(libest.issued()) - issued_before,
            "simpleenroll",
            LIBEST_PASSWORD,
            poll_resubmits=True,
            drop_sans=lambda: state.update(drop=True),
            toml_of=toml,
            forget=forget,
        )


def scrambled(text: str) -> str:
    """Every word replaced by letters no connector could expect; placeholders and quote
    marks (punctuation, not wording) kept."""
    parts = re.split(r'(\{\w+\}|")', text)
    return "".join(p if p.startswith("{") or p == '"' else re.sub(r"\w", "Ж", p) for p in parts)


# adcs-scrambled: a contract case against certsrv pages no sentence of which a connector could
# know (issue 8 part 4: outcomes come from the page structure alone)
ADCS_KINDS = ("adcs", "adcs-scrambled")


def adcs_language(kind: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The simulator's page language for an AD CS kind of ADCS_KINDS (installing the
    scrambled wording in its TEXT for this test)."""
    if kind != "adcs-scrambled":
        return "en"
    monkeypatch.setitem(TEXT, "scrambled", {k: scrambled(v) for k, v in TEXT["en"].items()})
    return "scrambled"


def adcs_harness(tmp_path: Path, auth: str = "ntlm", language: str = "en") -> Iterator[Harness]:
    """AD CS with its pages in `language` ("scrambled": every word unknown, installed in the
    simulator's TEXT by make_harness)."""
    with ADCSSimulator(extended_protection=True, language=language) as sim:

        def config(env: str, anchor: Path | None) -> ADCSConfig:
            return ADCSConfig(
                "corp-adcs",
                sim.url,
                "CollabServerClient",
                auth=auth,
                trust_anchor=anchor or sim.trust_anchor,
                username="CORP\\certd",
                password=Secret(f"env:{env}"),
            )

        def manual(on: bool) -> None:
            sim.manager_approval = on

        toml = f"""[ca.corp-adcs]
kind = "adcs"
url = "{sim.url}"
template = "CollabServerClient"
auth = "{auth}"
username = 'CORP\\certd'
password = "env:CERTD_TEST_SECRET"
trust_anchor = "{sim.trust_anchor}"
"""
        yield Harness(
            "adcs",
            "corp-adcs",
            sim,
            tmp_path,
            config,
            manual,
            sim.issue,
            lambda: sim.submissions,
            "submit",
            "Adcs-Secret1",
            toml,
            drop_sans=lambda: setattr(sim, "drop_sans", True),
            misorder=lambda: setattr(sim, "misorder", True),
            other_key=lambda: setattr(sim, "other_key", True),
        )


def acme_harness(tmp_path: Path, server: Pebble, bind9: Bind9, name: str = "pebble") -> Harness:

    os.environ["CERTD_TEST_TSIG"] = bind9.tsig_secret
    if server.eab_hmac:
        os.environ["CERTD_TEST_EAB"] = server.eab_hmac
    state = {"manual": False}  # ACME has no approval: wait=0 leaves the order pending

    def config(env: str, anchor: Path | None) -> ACMEConfig:
        return ACMEConfig(
            name,
            server.directory_url,
            challenge="dns-01",
            trust_anchor=anchor or server.trust_anchor,
            eab_kid=server.eab_kid,
            eab_hmac=Secret(f"env:{env}") if server.eab_hmac else None,
            rfc2136=RFC2136Config(
                "127.0.0.1",
                bind9.port,
                ZONE + ".",
                TSIG_KEY,
                Secret("env:CERTD_TEST_TSIG"),
                propagation_timeout=timedelta(seconds=10),
            ),
        )

    def manual(on: bool) -> None:
        state["manual"] = on

    eab = (
        f'eab_kid = "{server.eab_kid}"\neab_hmac = "env:CERTD_TEST_SECRET"\n'
        if server.eab_kid
        else ""
    )
    toml = f"""[ca.{name}]
kind = "acme"
directory = "{server.directory_url}"
trust_anchor = "{server.trust_anchor}"
challenge = "dns-01"
{eab}
[ca.{name}.rfc2136]
server = "127.0.0.1:{bind9.port}"
zone = "{ZONE}"
tsig_key = "{TSIG_KEY}"
tsig_secret = "env:CERTD_TEST_TSIG"
propagation_timeout = "10s"
"""
    return Harness(
        "acme",
        name,
        server,
        tmp_path,
        config,
        manual,
        lambda: None,
        lambda: None,
        "new_order",
        server.eab_hmac or "",
        toml,
        wrong_secret="d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZw",  # EAB HMAC: base64url
    )


def manual_harness(tmp_path: Path) -> Harness:
    """The manual kind: the CA is an operator with a web portal, here a lab CA that signs the
    CSR file the connector wrote, with the chain the config names (what `provide` then gets)."""
    portal = CA.create("Portal Issuing CA", parent=CA.create("Portal Root CA"))
    chain_file = tmp_path / "portal-chain.pem"
    chain_file.write_bytes(b"".join(cert_pem(c) for c in portal.chain()))
    csr_dir = tmp_path / "csrs"
    # the portal's profile keeps only the first name; the operator hands in the chain root
    # first; the portal certifies a key of its own (the operator uploaded another CSR)
    portal_does = {"drop_sans": False, "misorder": False, "other_key": False}

    def config(env: str, anchor: Path | None) -> ManualConfig:
        return ManualConfig("portal", csr_dir=csr_dir, chain=chain_file)

    async def operator_signs(conn: Any, result: Issued | Pending) -> Issued:
        """The operator gets the CSR file signed and hands the certificate in."""
        if isinstance(result, Issued):
            return result
        csr = x509.load_pem_x509_csr(Path(result.handle["csr_file"]).read_bytes())
        names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = names.get_values_for_type(x509.DNSName)
        leaf, _ = portal.issue(
            dns[0],
            dns[:1] if portal_does["drop_sans"] else dns,
            public_key=None if portal_does["other_key"] else csr.public_key(),
            key_kind="ec",
            key_size=256,
        )
        chain = await conn.ca_chain()
        if portal_does["misorder"]:
            chain = tuple(reversed(chain))
        return conn.accept(result.handle, leaf, chain)  # type: ignore[no-any-return]

    toml = f"""[ca.portal]
kind = "manual"
csr_dir = "{csr_dir}"
chain = "{chain_file}"
"""
    return Harness(
        "manual",
        "portal",
        portal,
        tmp_path,
        config,
        lambda on: None,  # always an operator
        lambda: None,  # the operator signs in `finish`
        lambda: len(list(csr_dir.glob("*.csr"))) if csr_dir.exists() else 0,
        "submit",
        "",
        toml,
        finish=operator_signs,
        drop_sans=lambda: portal_does.update(drop_sans=True),
        misorder=lambda: portal_does.update(misorder=True),
        other_key=lambda: portal_does.update(other_key=True),
    )


def make_harness(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    gen: Iterator[Harness] = iter(())
    if kind == "est":
        gen = est_harness(tmp_path)
        h = next(gen)
    elif kind in ADCS_KINDS:
        gen = adcs_harness(tmp_path, language=adcs_language(kind, monkeypatch))
        h = next(gen)
    elif kind == "manual":
        h = manual_harness(tmp_path)
    elif kind == "libest":
        gen = libest_harness(tmp_path, request.getfixturevalue("libest"))
        h = next(gen)
    else:
        h = acme_harness(
            tmp_path, request.getfixturevalue("pebble"), request.getfixturevalue("bind9")
        )
    monkeypatch.setenv("CERTD_TEST_SECRET", h.secret)
    yield h
    for conn in h.connectors:
        asyncio.run(conn.aclose())
    for _ in gen:
        pass


@pytest.fixture(params=["est", "libest", "adcs", "adcs-scrambled", "acme"], name="harness")
def harness_fixture(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    """Each connector that talks to a CA server, against it (ACME: session Pebble + BIND9;
    EST: the simulator and Cisco libest, whose module-scoped `libest` fixture the test module
    imports as `libest_ca` from tests.integration.libest)."""
    yield from make_harness(request.param, request, tmp_path, monkeypatch)


@pytest.fixture(params=["est", "libest", "adcs", "adcs-scrambled", "acme", "manual"], name="ca")
def ca_fixture(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    """Every CA kind, the manual one included; EST twice: the lab simulator and Cisco's libest
    (a module using this fixture imports `libest_ca` from tests.integration.libest)."""
    yield from make_harness(request.param, request, tmp_path, monkeypatch)


async def until_issued(conn: CAConnector, result: Issued | Pending, timeout: float = 30) -> Issued:
    """Poll a pending result until issued (fails the test after `timeout`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while isinstance(result, Pending):
        assert loop.time() < deadline, f"still pending: {result.reason}"
        await asyncio.sleep(0.2)
        result = await conn.poll(result.handle)
    return result


REALM = "LAB.TEST"


@dataclass
class KDC:
    """A real MIT KDC on loopback; `env` points krb5 at it (KRB5_CONFIG, a private ccache)."""

    port: int
    directory: Path
    env: dict[str, str]
    user: str
    password: str
    keytab: Path  # HTTP/127.0.0.1@LAB.TEST, for the AD CS simulator
    proc: subprocess.Popen[bytes] = field(repr=False)


@pytest.fixture(scope="session", name="kdc")
def kdc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KDC]:
    krb5kdc, kdb5_util, kadmin = (need_binary(n) for n in ("krb5kdc", "kdb5_util", "kadmin.local"))
    try:
        import gssapi  # noqa: F401, PLC0415 - pyspnego's Kerberos backend
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("python-gssapi is not installed; `make test` should have installed it")
        pytest.skip("python-gssapi not installed")
    directory = tmp_path_factory.mktemp("kdc")
    port = free_port()
    (directory / "kdc.conf").write_text(
        f"""[kdcdefaults]
    kdc_listen = 127.0.0.1:{port}
    kdc_tcp_listen = 127.0.0.1:{port}
[realms]
    {REALM} = {{
        database_name = {directory}/principal
        key_stash_file = {directory}/stash
        acl_file = {directory}/kadm5.acl
        max_life = 1h
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
    }}
[logging]
    kdc = FILE:{directory}/kdc.log
"""
    )
    (directory / "krb5.conf").write_text(
        f"""[libdefaults]
    default_realm = {REALM}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    udp_preference_limit = 1
[realms]
    {REALM} = {{
        kdc = 127.0.0.1:{port}
    }}
[domain_realm]
    127.0.0.1 = {REALM}
"""
    )
    env = {
        **os.environ,
        "KRB5_CONFIG": str(directory / "krb5.conf"),
        "KRB5_KDC_PROFILE": str(directory / "kdc.conf"),
        "KRB5CCNAME": f"FILE:{directory}/ccache",
    }
    keytab = directory / "http.keytab"
    password = "Kerb-Secret1"

    def run(*cmd: str) -> None:
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=30)

    run(kdb5_util, "create", "-s", "-r", REALM, "-P", "master-" + secrets.token_hex(8))
    run(kadmin, "-r", REALM, "-q", f"addprinc -pw {password} certd")
    run(kadmin, "-r", REALM, "-q", "addprinc -randkey HTTP/127.0.0.1")
    run(kadmin, "-r", REALM, "-q", f"ktadd -k {keytab} HTTP/127.0.0.1")
    log = directory / "krb5kdc.out"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [krb5kdc, "-n", "-r", REALM], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_port(port, proc, "krb5kdc", log)
        yield KDC(port, directory, env, f"certd@{REALM}", password, keytab, proc)
    finally:
        proc.terminate()
        proc.wait(10)
