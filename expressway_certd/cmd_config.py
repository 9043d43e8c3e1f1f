"""`expressway-certd check-config FILE`: validate a config file and summarise it (no secrets).

It checks what `run` checks before starting: the file, every secret reference (read, never
printed) and the state database's driver; its warnings are the ones `run` logs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from expressway_certd.config import load_config
from expressway_certd.monitor.config import check_runtime, startup_warnings
from expressway_certd.monitor.config_base import redact_url
from expressway_certd.monitor.durations import format_duration


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "check-config",
        help="validate a config file",
        description="Validate a config file, resolve every secret reference (values are never "
        "printed) and check the state database driver: what `run` checks before it starts.",
    )
    p.add_argument("file", help="TOML config file")
    p.add_argument(
        "--secrets",
        action="store_true",
        help="kept for scripts: secrets are always resolved now (values are never printed)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    check_runtime(config)
    for warning in startup_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    d = config.daemon
    print(f"{config.path}: OK")
    print(f"  listen        {d.listen_host}:{d.listen_port}")
    print(f"  state         {redact_url(d.state)}")
    print(f"  data_dir      {d.data_dir}")
    print(
        f"  poll interval {format_duration(d.poll_interval)} (timeout {format_duration(d.probe_timeout)})"
    )
    for exp in config.expressways:
        role = {"c": "Expressway-C", "e": "Expressway-E"}.get(exp.role or "", "role unknown")
        ports = ", ".join(
            f"{ep.address}{' starttls' if ep.starttls else ''}" for ep in exp.endpoints
        )
        print(f"  {exp.name} ({role}, {exp.address}): {ports}")
        if exp.renewal is not None:
            r = exp.renewal
            window = (
                f"window {r.maintenance_window.cron} {r.maintenance_window.timezone}"
                if r.maintenance_window
                else "restart at once"
            )
            print(
                f"    renewal: CA {r.ca}, renew_before {r.renew_before}, approval {r.approval}, {window}"
            )
    for name, ca in config.cas.items():
        print(f"  CA {name}: {getattr(ca, 'kind', '?')}")
    for ucm in config.unified_cms:
        print(f"  Unified CM {ucm.name}: {', '.join(ucm.nodes)}")
    for notifier in config.notifiers:
        print(f"  notifier {notifier.name}: {notifier.kind}")
    return 0
