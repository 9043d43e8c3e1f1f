"""`expressway-certd run --config FILE`: the service, until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from monitor.config import load_config
from monitor.daemon import serve
from monitor.logging import configure_logging


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="run the monitoring service",
        description="Poll every endpoint, keep state, serve /metrics and the API until stopped.",
    )
    p.add_argument("--config", "-c", required=True, help="TOML config file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    configure_logging(config.daemon.log_level, config.daemon.log_format)
    asyncio.run(serve(config))
    return 0
