"""`expressway-certd run --config FILE`: the service, until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from typing import Any

import structlog

from expressway_certd.config import load_config
from expressway_certd.daemon import serve
from expressway_certd.monitor.config import check_runtime, ensure_private_dirs, startup_warnings
from expressway_certd.monitor.logging import configure_logging


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="run the monitoring service",
        description="Poll every endpoint, keep state, serve /metrics and the API until stopped.",
    )
    p.add_argument("--config", "-c", required=True, help="TOML config file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return start_service(args.config)


def start_service(path: str, *, renewal_options: Mapping[str, Any] | None = None) -> int:
    """Load and check the config at `path`, then serve until stopped. `renewal_options` go to
    the renewal manager unchanged (tests/e2e/seamed_daemon.py passes a fault seam)."""
    config = load_config(path)
    check_runtime(config)  # refuse to start on anything check-config calls an error
    configure_logging(config.daemon.log_level, config.daemon.log_format)
    log = structlog.get_logger("monitor.config")
    for warning in [*ensure_private_dirs(config.daemon.data_dir), *startup_warnings(config)]:
        log.warning("config_warning", message=warning)
    asyncio.run(serve(config, renewal_options=renewal_options))
    return 0
