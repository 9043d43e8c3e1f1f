"""Issue one certificate from Pebble through our ACME connector and through certbot, in the
same run: CPU seconds and wall seconds of each client process, and the ratio (goal: our CPU at
most half of certbot's). Pebble validates nothing (PEBBLE_VA_ALWAYS_VALID=1), both clients use a
no-op DNS hook, both start from an empty state (account registration included).

    python -m tests.bench.bench_acme [--runs N]
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _issue(directory: str, anchor: str, state: str, count: int = 1) -> int:
    """The measured client: key + CSR as the Expressway would make them, then issuance.

    With count > 1 (a warm daemon): after the first issuance, print the CPU seconds of each
    further one, as `WARM <seconds>` lines.
    """
    import asyncio  # noqa: PLC0415 - keep the parent process lean
    from datetime import timedelta  # noqa: PLC0415

    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    from expressway_certd.renewers.ca.acme import ACMEConnector  # noqa: PLC0415
    from expressway_certd.renewers.ca.acme_config import ACMEConfig  # noqa: PLC0415
    from expressway_certd.renewers.ca.base import Issued  # noqa: PLC0415

    def csr() -> x509.CertificateSigningRequest:
        name = f"bench-{secrets.token_hex(4)}.example.com"
        key = ec.generate_private_key(ec.SECP256R1())
        return (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
            .sign(key, hashes.SHA256())
        )

    config = ACMEConfig(
        "bench", directory, challenge="hook", trust_anchor=Path(anchor), hook=("/bin/true",)
    )

    async def run() -> bool:
        conn = ACMEConnector(config, data_dir=Path(state), wait=timedelta(seconds=60))
        ok = isinstance(await conn.submit(csr()), Issued)
        for _ in range(count - 1):
            started = time.process_time()
            ok = ok and isinstance(await conn.submit(csr()), Issued)
            print(f"WARM {time.process_time() - started:.4f}", flush=True)
        await conn.aclose()
        return ok

    return 0 if asyncio.run(run()) else 1


def _measure(
    cmd: list[str], env: dict[str, str], out: list[str] | None = None
) -> tuple[float, float]:
    """(CPU seconds of the child and its children, wall seconds) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(
            f"{cmd[0]} failed ({done.returncode}): {done.stdout[-1500:]}{done.stderr[-1500:]}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if out is not None:
        out.extend(done.stdout.splitlines())
    return cpu, wall


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_acme")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--issue", nargs=4, help=argparse.SUPPRESS)  # the measured child
    args = parser.parse_args(argv)
    if args.issue:
        return _issue(*args.issue[:3], count=int(args.issue[3]))

    from tests.integration.ca_servers import start_pebble  # noqa: PLC0415

    certbot = shutil.which("certbot")
    if certbot is None or shutil.which("pebble") is None:
        print("needs Debian packages pebble and certbot")
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-acme-"))
    pebble = start_pebble(root, None, env={"PEBBLE_VA_ALWAYS_VALID": "1"})
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": repo, "REQUESTS_CA_BUNDLE": str(pebble.trust_anchor)}
    ours: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    try:
        for run in range(args.runs):
            state = root / f"ours-{run}"
            ours.append(_measure(
                [sys.executable, "-m", "tests.bench.bench_acme", "--issue",
                 pebble.directory_url, str(pebble.trust_anchor), str(state), "1"], env,
            ))  # fmt: skip
            base = root / f"certbot-{run}"
            theirs.append(_measure(
                [certbot, "certonly", "--non-interactive", "--agree-tos",
                 "--register-unsafely-without-email", "--server", pebble.directory_url,
                 "--manual", "--preferred-challenges", "dns", "--manual-auth-hook", "/bin/true",
                 "--key-type", "ecdsa", "-d", f"bench-{secrets.token_hex(4)}.example.com",
                 "--config-dir", str(base / "config"), "--work-dir", str(base / "work"),
                 "--logs-dir", str(base / "logs")], env,
            ))  # fmt: skip
        lines: list[str] = []
        _measure(
            [sys.executable, "-m", "tests.bench.bench_acme", "--issue", pebble.directory_url,
             str(pebble.trust_anchor), str(root / "warm"), str(args.runs * 3 + 1)], env, lines,
        )  # fmt: skip
        warm = [float(line.split()[1]) for line in lines if line.startswith("WARM ")]
    finally:
        pebble.proc.terminate()
        pebble.proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)

    def median(rows: list[tuple[float, float]], i: int) -> float:
        return statistics.median(r[i] for r in rows)

    cpu_ours, cpu_theirs = median(ours, 0), median(theirs, 0)
    wall_ours, wall_theirs = median(ours, 1), median(theirs, 1)
    print(f"one ACME issuance from Pebble (empty state, account included), median of {args.runs}:")
    print(f"  {'client':<28} {'CPU s':>8} {'wall s':>8}")
    print(f"  {'expressway-certd connector':<28} {cpu_ours:8.2f} {wall_ours:8.2f}")
    print(f"  {'certbot --manual':<28} {cpu_theirs:8.2f} {wall_theirs:8.2f}")
    ratio, wall_ratio = cpu_ours / cpu_theirs, wall_ours / wall_theirs
    print(f"  ratio ours/certbot: CPU {ratio:.2f}x, wall {wall_ratio:.2f}x (goal CPU <= 0.5x)")
    cpu_warm = statistics.median(warm)
    print(f"in the running daemon (imports and account paid once), median of {len(warm)}:")
    print(f"  {'expressway-certd, warm':<28} {cpu_warm:8.3f}")
    print(f"  ratio warm ours/certbot: CPU {cpu_warm / cpu_theirs:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
