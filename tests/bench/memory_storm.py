"""Where a renewal storm's memory went (issue 11 part 3), measured in one process by RSS:

- `trust-map`: one trust-map read (expressway_certd/trustmap_live.py `gather`) of `--boxes`
  lab Expressway-Es (tests/bench/storm_lab.py, in its own process, as the storm benchmark
  starts them), with `--concurrency` boxes read at once (the daemon: `[daemon] concurrency`
  / 4 = 16; a number as large as the fleet reads all at once, as before the bound).
- `contexts`: `--clients` device API clients (renewers/device_http.py `HttpApi`) held at once,
  each with its verifying TLS context as the client makes it now (shared per CA file) and as
  it did before (`--each`: a context per client), with the system store or a one-CA file.

`python -m tests.bench.memory_storm trust-map --boxes 300 [--concurrency 100000]`,
`python -m tests.bench.memory_storm contexts [--each] [--system]`. Not part of `make bench`:
a diagnosis, its figures are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from expressway_certd_lab.pki import CA

from expressway_certd import trustmap_live
from expressway_certd.config import load_config
from expressway_certd.renewers import device_http
from expressway_certd.renewers.pipeline import ConfiguredDevices
from tests.bench.bench_storm import StormLab, config_toml
from tests.bench.measure import free_port, machine, rss_bytes

MiB = 1024 * 1024


def trust_map_peak(boxes: int, concurrency: int) -> str:
    directory = Path(tempfile.mkdtemp(prefix="certd-memory-storm-"))
    lab = StormLab.start(directory / "lab", boxes, 0.5, 5.0)
    try:
        run = directory / "daemon"
        run.mkdir()
        (run / "certd.toml").write_text(
            config_toml(
                lab.info, run, listen=f"127.0.0.1:{free_port()}", per_hour=boxes,
                concurrent=100, state=str(run / "state.db"),
            )
        )  # fmt: skip
        cfg = load_config(run / "certd.toml")

        async def read() -> tuple[int, int]:
            devices = ConfiguredDevices({"timeout": 60.0})
            parties, _, _ = await trustmap_live.gather(
                cfg, devices, {}, {}, 60.0, concurrency=concurrency
            )
            return len(parties), sum(1 for p in parties.values() if p.unread)

        gc.collect()
        before = rss_bytes(os.getpid())[0]
        read_, unread = asyncio.run(read())
        gc.collect()
        after, peak = rss_bytes(os.getpid())
    finally:
        lab.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return (
        f"trust map of {boxes} lab Expressway-Es, {concurrency} read at once: {read_} read "
        f"({unread} unread); RSS {before / MiB:.1f} MiB before, peak {peak / MiB:.1f} MiB "
        f"(+{(peak - before) / MiB:.1f} MiB, {(peak - before) / boxes / 1024:.0f} KiB a box), "
        f"after {after / MiB:.1f} MiB\nmachine: {machine()}"
    )


def contexts(clients: int, each: bool, system: bool) -> str:
    directory = Path(tempfile.mkdtemp(prefix="certd-memory-contexts-"))
    ca_file = None if system else CA.create("One CA").write_bundle(directory / "ca.pem")
    make = device_http.tls_context
    if each:  # what tls_context did before: a new context for every client

        def make(target: str, ca_file: Path | None, key: str = "api_ca_file") -> ssl.SSLContext:
            if ca_file is None:
                return ssl.create_default_context()
            return ssl.create_default_context(cafile=str(ca_file))

    gc.collect()
    before = rss_bytes(os.getpid())[0]
    held = [make(f"e{i}", ca_file) for i in range(clients)]
    gc.collect()
    after = rss_bytes(os.getpid())[0]
    shutil.rmtree(directory, ignore_errors=True)
    what = "the system store" if system else "a one-CA api_ca_file"
    how = "a context per client" if each else "shared contexts"
    return (
        f"{clients} device clients with {what}, {how} ({len({id(c) for c in held})} "
        f"distinct): +{(after - before) / MiB:.1f} MiB RSS\nmachine: {machine()}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="memory_storm", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    tm = sub.add_parser("trust-map")
    tm.add_argument("--boxes", type=int, default=300)
    tm.add_argument("--concurrency", type=int, default=trustmap_live.PARTY_READS)
    cx = sub.add_parser("contexts")
    cx.add_argument("--clients", type=int, default=200)
    cx.add_argument("--each", action="store_true", help="a context per client (as before)")
    cx.add_argument("--system", action="store_true", help="no api_ca_file: the system store")
    args = parser.parse_args(argv)
    if args.what == "trust-map":
        print(trust_map_peak(args.boxes, args.concurrency))
    else:
        print(contexts(args.clients, args.each, args.system))


if __name__ == "__main__":
    main()
