"""The `expressway-certd` command line: one verb per module, each registering its own parser.

Every verb module exposes `register(subparsers)`, which adds its parsers and sets `func`
(a callable taking the parsed args and returning the exit code). Only the module of the verb
being run is imported: `--help` imports none of them, `scan` none of the daemon, the store or
the simulators (tests/unit/test_cli_imports.py keeps VERBS in step with the modules).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from expressway_certd.monitor import __version__
from expressway_certd.monitor.errors import CertdError

# (verb, module that registers it, one-line help), in the order `--help` lists them.
VERBS: tuple[tuple[str, str, str], ...] = (
    ("scan", "expressway_certd.cmd_scan", "show the certificates endpoints serve"),
    ("check-config", "expressway_certd.cmd_config", "validate a config file"),
    ("run", "expressway_certd.cmd_run", "run the monitoring service"),
    ("db", "expressway_certd.cmd_db", "show or upgrade the state database's schema"),
    ("demo", "expressway_certd.cmd_demo", "the full renewal cycle on the built-in lab"),
    ("plan", "expressway_certd.cmd_renew", "dry run: what renewing a target would do"),
    ("renew", "expressway_certd.cmd_renew", "renew a target's certificate now, showing each stage"),
    ("approve", "expressway_certd.cmd_renew", "approve a renewal waiting at the approve stage"),
    (
        "cancel",
        "expressway_certd.cmd_renew",
        "end an active renewal in any state (then `renew --now` starts afresh)",
    ),
    (
        "provide",
        "expressway_certd.cmd_renew",
        "hand in the signed certificate for a renewal (CAs signed by hand)",
    ),
    ("status", "expressway_certd.cmd_renew", "renewal state per target, with the stage timeline"),
    (
        "sign",
        "expressway_certd.cmd_ca",
        "submit a CSR to a configured CA and write the certificate",
    ),
    (
        "ca-check",
        "expressway_certd.cmd_ca",
        "check a configured CA: reachability, authentication, chain",
    ),
    ("inspect", "expressway_certd.cmd_device", "show what the API of one Expressway reports"),
    (
        "check-cert",
        "expressway_certd.cmd_check",
        "check a hand-obtained certificate before installing it (Cisco steps C and D)",
    ),
    (
        "decode",
        "expressway_certd.cmd_check",
        "show a certificate, chain, CSR or PKCS#7 file as the Expressway decodes it",
    ),
    (
        "trust-map",
        "expressway_certd.cmd_trustmap",
        "show which TLS relations of the deployment are ok, broken or will break",
    ),
    ("lab", "expressway_certd_lab.cmd_lab", "run the simulated Expressway pair and Unified CM"),
)
COMMAND_MODULES = tuple(dict.fromkeys(module for _, module, _ in VERBS))


def _chosen_verb(argv: Sequence[str]) -> str | None:
    """The verb on the command line (the first argument that is not an option), if any."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(
    argv: Sequence[str] | None = None, *, every_verb: bool = False
) -> argparse.ArgumentParser:
    """The parser for `argv`: the chosen verb's module registers its real parsers; the other
    verbs get a placeholder carrying their help line (enough for `--help` and for argparse's
    "invalid choice" message). `every_verb` imports every module (tests)."""
    parser = argparse.ArgumentParser(
        prog="expressway-certd",
        description="Watch and renew the TLS certificates of Cisco Expressway/VCS servers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = _chosen_verb(sys.argv[1:] if argv is None else argv)
    modules = {module for verb, module, _ in VERBS if every_verb or verb == chosen}
    registered: set[str] = set()
    for verb, module, help_line in VERBS:
        if verb in registered:
            continue
        if module in modules:
            before = set(subparsers.choices)
            importlib.import_module(module).register(subparsers)
            registered |= set(subparsers.choices) - before
            modules.discard(module)
        else:
            subparsers.add_parser(verb, help=help_line, add_help=False)
            registered.add(verb)
    return parser


LAB_MISSING = (
    "the simulators are not installed (a production install leaves them out); install the lab "
    "extra: pip install 'expressway-certd[lab]', or run `make demo` in a source checkout"
)


def _is_lab(exc: ModuleNotFoundError) -> bool:
    return exc.name is not None and (
        exc.name == "expressway_certd_lab" or exc.name.startswith("expressway_certd_lab.")
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser(argv)
    except ModuleNotFoundError as exc:
        if not _is_lab(exc):
            raise
        verb = _chosen_verb(sys.argv[1:] if argv is None else argv)
        print(f"expressway-certd {verb}: {LAB_MISSING}", file=sys.stderr)
        return 2
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
