"""`python -m tests.bench [NAME ...]`: run every `bench_*.py` module's `main()`, or the named ones
(`probe` or `bench_probe`); `python -m tests.bench NAME --option ...` passes the options to the
one named benchmark (`python -m tests.bench scan --runs 3`). Benchmarks print their figures;
they never fail on a timing, and one that crashes is reported after the others have run."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import time
import traceback
from pathlib import Path


def available() -> list[str]:
    here = str(Path(__file__).parent)
    return sorted(m.name for m in pkgutil.iter_modules([here]) if m.name.startswith("bench_"))


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the benchmarks named, options for them): the options start at the first argument that
    starts with '-'."""
    first = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    return [a if a.startswith("bench_") else f"bench_{a}" for a in argv[:first]], argv[first:]


def main(argv: list[str]) -> int:
    names = available()
    wanted, options = split_argv(argv)
    wanted = wanted or names
    unknown = [w for w in wanted if w not in names]
    if unknown:
        print(f"unknown benchmark {', '.join(unknown)}; available: {', '.join(names)}")
        return 2
    if options and len(wanted) != 1:
        print(f"options ({' '.join(options)}) need exactly one benchmark named before them")
        return 2
    crashed = []
    for name in wanted:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        try:
            entry = importlib.import_module(f"tests.bench.{name}").main
            # main(argv) gets the options given (else its defaults); a main() without
            # parameters takes none.
            if inspect.signature(entry).parameters:
                entry(options)
            elif options:
                print(f"{name} takes no options")
                return 2
            else:
                entry()
        except Exception:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            crashed.append(name)
        print(f"== {name}: {time.monotonic() - started:.0f} s\n", flush=True)
    if crashed:
        print(f"benchmarks that crashed (no figures): {', '.join(crashed)}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
