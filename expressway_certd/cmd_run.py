"""`expressway-certd run --config FILE`: the service, until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import structlog

from expressway_certd.daemon import serve
from monitor.config import check_runtime, ensure_private_dirs, load_config, startup_warnings
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
    check_runtime(config)  # refuse to start on anything check-config calls an error
    configure_logging(config.daemon.log_level, config.daemon.log_format)
    log = structlog.get_logger("monitor.config")
    for warning in [*ensure_private_dirs(config.daemon.data_dir), *startup_warnings(config)]:
        log.warning("config_warning", message=warning)
    asyncio.run(serve(config))
    return 0
