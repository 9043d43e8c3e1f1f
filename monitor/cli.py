"""The `expressway-certd` command line: one verb per module, each registering its own parser.

Every verb module exposes `register(subparsers)`, which adds its parser and sets `func`
(a callable taking the parsed args and returning the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from monitor import __version__
from monitor.errors import CertdError

# Verb modules, in the order `--help` lists them.
COMMAND_MODULES = (
    "monitor.cmd_scan",
    "monitor.cmd_config",
    "monitor.cmd_run",
    "monitor.cmd_db",
    "monitor.cmd_demo",
    "renewers.cmd_renew",
    "renewers.cmd_ca",
    "renewers.cmd_device",
    "renewers.cmd_check",
    "renewers.cmd_trustmap",
    "lab.cmd_lab",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="expressway-certd",
        description="Watch and renew the TLS certificates of Cisco Expressway/VCS servers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except CertdError as exc:
        print(f"expressway-certd {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
