"""`expressway-certd db current|upgrade --config FILE`: the state database's schema revision.

`current` reports where the database stands and changes nothing (exit 1 when migrations are
pending, so a deployment script can tell); `upgrade` applies them, as `run` does at start.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from expressway_certd.config import load_config


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "db",
        help="show or upgrade the state database's schema",
        description="Show (current) or apply (upgrade) the state database's schema migrations. "
        "`run` applies them at start too; `upgrade` lets you do it on your schedule.",
    )
    p.add_argument("action", choices=("current", "upgrade"), help="what to do")
    p.add_argument("--config", "-c", required=True, help="TOML config file ([daemon] state)")
    p.set_defaults(func=run)


async def _db(url: str, action: str) -> tuple[str, bool]:
    from expressway_certd.monitor.store import Store  # noqa: PLC0415 - keeps `--help` fast

    store = await Store.open(url, migrate=False)
    try:
        if action == "current":
            status = await store.schema_status()
            return f"{store.url}: {status.describe()}", status.up_to_date
        before = await store.schema_status()
        after = await store.upgrade_schema()
        if before.up_to_date:
            return f"{store.url}: {after.describe()}; nothing to do", True
        applied = ", ".join(before.pending) + (" (after stamping 0.1)" if before.legacy else "")
        return f"{store.url}: applied {applied}; {after.describe()}", True
    finally:
        await store.close()


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    message, up_to_date = asyncio.run(_db(config.daemon.state, args.action))
    print(message)
    return 0 if up_to_date else 1
