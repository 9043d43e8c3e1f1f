"""A farm of loopback TLS endpoints served from its own process, so its CPU is not the prober's.

Two shapes, both RSA-2048 leaves under an RSA-2048 issuing CA, the chain Expressways serve:

- `--direct N`: N listeners on 127.0.0.1, each with its own leaf (no SNI needed) and its own
  key, or with `--direct-keys K` one of K keys in turn (minting 1,000 RSA keys takes minutes);
- `--targets T --hosts H`: five listeners per loopback address 127.0.0.1..127.0.0.H (four direct
  TLS ports and one XMPP STARTTLS port, an Expressway-E's set) that serve, by SNI, one distinct
  leaf per simulated Expressway `exp00000.bench.example` ... (leaves share one key: minting
  thousands of RSA keys would take minutes and changes nothing the prober sees).

The child prints one JSON line (`ports`, `bundle`, `names`) when it is ready and serves until its
stdin closes. `Farm` starts and stops it from the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from expressway_certd_lab.pki import CA, new_key, write_key_and_chain
from expressway_certd_lab.tls import LabListener, server_context

DOMAIN = "bench.example"
PORTS_PER_HOST = ("tls", "tls", "tls", "tls", "xmpp")  # 443, 5061, 7001, 8443, 5222 of an E


def target_name(index: int) -> str:
    return f"exp{index:05d}.{DOMAIN}"


def _context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = server_context(cert_file, key_file)
    # Neither prober resumes sessions; tickets would only spend farm CPU.
    ctx.num_tickets = 0
    return ctx


def _pki(directory: Path) -> CA:
    root = CA.create("Bench Root CA", key_kind="rsa", key_size=2048)
    issuing = CA.create("Bench Issuing CA", parent=root, key_kind="rsa", key_size=2048)
    root.write_bundle(directory / "bench-root.pem")
    return issuing


async def _serve_direct(directory: Path, count: int, keys: int) -> dict[str, Any]:
    issuing = _pki(directory)
    shared = [new_key("rsa", 2048) for _ in range(min(keys, count))] if keys else []
    listeners = []
    for i in range(count):
        name = f"direct{i}.{DOMAIN}"
        own = shared[i % len(shared)] if shared else None
        leaf, key = issuing.issue(name, [name, "127.0.0.1"], key=own)
        key = key or own
        assert key is not None
        cert_file, key_file = write_key_and_chain(
            directory, f"direct{i}", leaf, key, [issuing.cert]
        )
        listeners.append(await LabListener(context=_context(cert_file, key_file)).start())
    return {"ports": [["127.0.0.1", lst.port, lst.mode] for lst in listeners]}


class _SNIContexts:
    """Server contexts by SNI name, built on first use (thousands of them are not all needed at
    once, and loading them up front would delay the benchmark)."""

    def __init__(self, directory: Path, default: ssl.SSLContext) -> None:
        self.directory = directory
        self.default = default
        self.key_file = directory / "default.key"
        self._built: dict[str, ssl.SSLContext] = {}

    def callback(self, ssl_object: Any, name: str | None, _: ssl.SSLContext) -> None:
        if not name:
            return
        ctx = self._built.get(name)
        if ctx is None:
            cert_file = self.directory / f"{name}.pem"
            if not cert_file.exists():
                return  # unknown name: the default certificate
            ctx = _context(cert_file, self.key_file)
            self._built[name] = ctx
        ssl_object.context = ctx


async def _serve_targets(directory: Path, targets: int, hosts: int) -> dict[str, Any]:
    issuing = _pki(directory)
    key = new_key("rsa", 2048)
    names = [target_name(i) for i in range(targets)]
    for name in names:
        leaf, _ = issuing.issue(name, [name], key=key)
        write_key_and_chain(directory, name, leaf, key, [issuing.cert])
    default_cert, default_key = write_key_and_chain(
        directory, "default", issuing.issue("default." + DOMAIN, key=key)[0], key, [issuing.cert]
    )
    sni = _SNIContexts(directory, _context(default_cert, default_key))
    sni.default.sni_callback = sni.callback
    ports = []
    for h in range(hosts):
        host = f"127.0.0.{h + 1}"
        for mode in PORTS_PER_HOST:
            listener = await LabListener(mode=mode, host=host, context=sni.default).start()
            ports.append([host, listener.port, mode])
    return {"ports": ports, "names": len(names)}


async def _child(args: argparse.Namespace) -> None:
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    if args.targets:
        info = await _serve_targets(directory, args.targets, args.hosts)
    else:
        info = await _serve_direct(directory, args.direct, args.direct_keys)
    info["bundle"] = str(directory / "bench-root.pem")
    print(json.dumps(info), flush=True)
    # Serve until the parent closes our stdin (it exits or calls Farm.stop()), then leave at
    # once: tearing down hundreds of half-closed lab connections only prints cancellation noise.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    os._exit(0)


@dataclass
class Farm:
    """The farm child process, as seen from the benchmark."""

    process: subprocess.Popen[str]
    ports: list[tuple[str, int, str]]
    bundle: Path

    @classmethod
    def start(
        cls,
        directory: Path,
        *,
        direct: int = 0,
        direct_keys: int = 0,
        targets: int = 0,
        hosts: int = 1,
    ) -> Farm:
        cmd = [sys.executable, "-m", "tests.bench.farm", "--dir", str(directory)]
        cmd += ["--targets", str(targets), "--hosts", str(hosts)] if targets else []
        cmd += ["--direct", str(direct), "--direct-keys", str(direct_keys)] if direct else []
        process = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=_repo_root()
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            process.wait(10)
            raise RuntimeError(f"bench farm exited with {process.returncode} before it was ready")
        info = json.loads(line)
        ports = [(h, int(p), m) for h, p, m in info["ports"]]
        return cls(process, ports, Path(info["bundle"]))

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Farm:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _repo_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def main_child(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--direct", type=int, default=0)
    parser.add_argument("--direct-keys", type=int, default=0, help="0: one key per listener")
    parser.add_argument("--targets", type=int, default=0)
    parser.add_argument("--hosts", type=int, default=1)
    args = parser.parse_args(argv)
    os.umask(0o077)
    # asyncio warns on every client that closes gracefully after the handshake (blackbox does).
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    asyncio.run(_child(args))


if __name__ == "__main__":
    main_child()
