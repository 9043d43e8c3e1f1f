"""Cisco's libest EST server (`estserver`), run for real on loopback: the oracle the EST
connector is judged by (tests/integration/test_est_libest.py, the EST case of
test_ca_contract.py).

The binary is Debian's source package of libest 3.2.0 (3.2.0+ds-1.1), built unmodified with
Debian's patches by scripts/build-libest.sh into `.cache/libest-3.2.0+ds-1.1/` (`make test`
builds it; `LIBEST_DIR` points elsewhere). Its CA is made by the example's own
`example/server/createCA.sh`, run unchanged in a temp directory with Debian's `openssl`: an
OpenSSL `ca` directory `estCA` (`estExampleCA.cnf`: `copy_extensions = none`, so the CSR's
SANs are not copied; `policy_any`: only CN and serialNumber kept from the subject) whose
server certificate names 127.0.0.1, and the example's user estuser / estpwd
(`process_http_auth` in estserver.c). A client (RA) certificate is issued by the same CA with
`openssl ca`, as createCA.sh issues the server's.

estserver polls accept() with usleep(100) and costs ~10 % of a core while idle, so a server
is started per test group and stopped right after; only the CA is made once per module.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.helpers import free_port

VERSION = "3.2.0+ds-1.1"
REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD = "estuser", "estpwd"  # estserver.c process_http_auth
REALM = "estrealm"  # runserver.sh -r
EXAMPLE_FILES = ("createCA.sh", "ESTcommon.sh", "estExampleCA.cnf", "extExampleCA.cnf", "ext.cnf")
CMC_RA_OID = "1.3.6.1.5.5.7.3.28"


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"estserver exited early: {log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"estserver did not listen on {port}: {log.read_text()[-2000:]}")


def libest_dir() -> Path:
    """The libest build; skip locally when absent, fail under CI (`make test` builds it)."""
    directory = Path(os.environ.get("LIBEST_DIR", REPO / ".cache" / f"libest-{VERSION}"))
    if not (directory / "inst" / "bin" / "estserver").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"no estserver in {directory}; `make test` builds it")
        pytest.skip(f"libest not built in {directory} (run scripts/build-libest.sh)")
    return directory


@dataclass
class LibESTServer:
    """One estserver process on `port` (kept across restarts); `url` is its EST base URL."""

    port: int
    argv: list[str]
    env: dict[str, str] = field(repr=False)
    cwd: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/.well-known/est"

    def start(self) -> LibESTServer:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_port(self.port, self.proc, self.log)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        """Stop and start on the same port: estserver keeps its state (the CSRs its -m mode
        has seen) in memory only, so the new process has forgotten them, as a reset CA has."""
        self.stop()
        self.start()


@dataclass
class LibESTCA:
    """The example's OpenSSL CA directory (createCA.sh output) and how to run estserver on it."""

    directory: Path
    estserver: Path

    @property
    def cacert(self) -> Path:
        """estCA/cacert.crt: signs the server's TLS certificate and what it issues."""
        return self.directory / "estCA" / "cacert.crt"

    def issued(self) -> list[str]:
        """Serials in the CA database (estCA/index.txt), in issuing order."""
        text = (self.directory / "estCA" / "index.txt").read_text()
        return [line.split("\t")[3] for line in text.splitlines() if line.strip()]

    def client_certificate(self, name: str, ekus: list[str]) -> tuple[Path, Path]:
        """A TLS client certificate issued by estCA with `openssl ca` (key file 0600)."""
        out = self.directory / "clients"
        out.mkdir(exist_ok=True)
        key, req, cert = (out / f"{name}.{ext}" for ext in ("key", "req", "pem"))
        ext = out / f"{name}.ext"
        ext.write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
            f"extendedKeyUsage={','.join(ekus)}\n"
        )
        self._openssl(
            "req", "-new", "-sha256", "-nodes", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-keyout", str(key), "-out", str(req),
            "-subj", f"/CN={name}", "-config", "estExampleCA.cnf",
        )  # fmt: skip
        self._openssl(
            "ca", "-md", "sha256", "-batch", "-config", "estExampleCA.cnf", "-extfile",
            str(ext), "-in", str(req), "-out", str(cert),
        )  # fmt: skip
        key.chmod(0o600)
        # `openssl ca -out` writes the text form before the PEM; keep only the PEM.
        pem = x509.load_pem_x509_certificate(cert.read_bytes())
        cert.write_bytes(pem.public_bytes(Encoding.PEM))
        return cert, key

    def _openssl(self, *args: str) -> None:
        subprocess.run(
            ["openssl", *args], cwd=self.directory, check=True, capture_output=True, timeout=60
        )

    def copying_config(self) -> str:
        """estExampleCA.cnf with `copy_extensions = copy`: the profile of a CA operator who
        lets the CSR's SANs through (the example's own copies none)."""
        return self._profile("estCopyCA.cnf", {"copy_extensions = none": "copy_extensions = copy"})

    def server_profile_config(self) -> str:
        """The copying profile that also issues what an Expressway needs: keyUsage
        digitalSignature + keyEncipherment, EKU serverAuth + clientAuth (the example's
        `client_cert` section sets digitalSignature only and no EKU)."""
        return self._profile(
            "estServerCA.cnf",
            {
                "copy_extensions = none": "copy_extensions = copy",
                "keyUsage=digitalSignature\n": "keyUsage=digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth,clientAuth\n",
            },
        )

    def _profile(self, name: str, changes: dict[str, str]) -> str:
        """estExampleCA.cnf with `changes` (each must be found once), written once."""
        path = self.directory / name
        if not path.exists():
            text = (self.directory / "estExampleCA.cnf").read_text()
            for old, new in changes.items():
                assert text.count(old) == 1, f"estExampleCA.cnf changed: {old!r}"
                text = text.replace(old, new)
            path.write_text(text)
        return name

    @contextmanager
    def serve(
        self, *flags: str, ca_config: str = "estExampleCA.cnf", csr_attrs: bytes | None = None
    ) -> Iterator[LibESTServer]:
        """estserver as runserver.sh starts it, plus `flags` (-m SECONDS, -n, -o, -t, ...);
        `ca_config` is the OpenSSL CA configuration it signs with, `csr_attrs` the DER of the
        CsrAttrs it serves (runserver.sh's EST_CSR_ATTR; default: estserver.c's TEST_CSR)."""
        port = free_port()
        env = {
            **os.environ,
            "EST_TRUSTED_CERTS": "./trustedcerts.crt",
            "EST_CACERTS_RESP": "./estCA/cacert.crt",
            "EST_OPENSSL_CACONFIG": f"./{ca_config}",
        }
        env.pop("EST_CSR_ATTR", None)
        if csr_attrs is not None:
            env["EST_CSR_ATTR"] = base64.b64encode(csr_attrs).decode()
        key = "estCA/private/estservercertandkey.pem"
        # -d: an orphan (a killed test run) shuts itself down after 15 minutes.
        argv = [str(self.estserver), "-c", key, "-k", key, "-r", REALM, "-v"]
        argv += ["-p", str(port), "-d", "900", *flags]
        log = self.directory / f"estserver-{port}.log"
        server = LibESTServer(port, argv, env, self.directory, log)
        try:
            yield server.start()
        finally:
            server.stop()


def make_libest_ca(directory: Path) -> LibESTCA:
    """Run the example's createCA.sh (unchanged) in `directory`; it asks for one key press."""
    build = libest_dir()
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed; `make test` installs it")
    example = build / "src" / "example" / "server"
    for name in EXAMPLE_FILES:
        shutil.copy(example / name, directory / name)
    done = subprocess.run(
        ["bash", "createCA.sh"],
        cwd=directory,
        input=b"\n",
        capture_output=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0 or not (directory / "estCA" / "cacert.crt").is_file():
        raise RuntimeError(f"createCA.sh failed: {done.stdout[-2000:]!r} {done.stderr[-2000:]!r}")
    return LibESTCA(directory, build / "inst" / "bin" / "estserver")


@pytest.fixture(scope="module", name="libest")
def libest_ca(tmp_path_factory: pytest.TempPathFactory) -> LibESTCA:
    """The libest example CA, made once per module."""
    return make_libest_ca(tmp_path_factory.mktemp("libest"))
