"""Terminal-safe text: `printable(s)` escapes what a hostile certificate, server or CA could use
to steer an operator's terminal (ESC sequences, NUL, other C0 and C1 controls, DEL) or to make
text read differently from what it is (bidirectional overrides and isolates).

Every human-readable output (scan, inspect, status, plan, console logs) passes the values it
did not write itself through `printable`; JSON output and /metrics escape on their own.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

# Unicode bidi formatting characters (UAX #9): embeddings, overrides, isolates, marks.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _unsafe(char: str, keep_newlines: bool) -> bool:
    code = ord(char)
    if char == "\n" and keep_newlines:
        return False
    return code < 0x20 or 0x7F <= code <= 0x9F or char in _BIDI


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(value: object, *, keep_newlines: bool = False) -> str:
    """`str(value)` with C0/C1 controls, DEL and bidi formatting characters written as
    `\\xNN` / `\\uNNNN`; everything else, other non-ASCII text included, as is."""
    text = value if isinstance(value, str) else str(value)
    if all(not _unsafe(c, keep_newlines) for c in text):
        return text  # the common case: nothing to copy
    return "".join(_escape(c) if _unsafe(c, keep_newlines) else c for c in text)


def printable_values(value: T) -> T:
    """The same JSON-like tree (dicts, lists, tuples) with every string passed through
    `printable`, for renderers that format a report built for `--json`."""
    if isinstance(value, str):
        return printable(value)  # type: ignore[return-value]
    if isinstance(value, dict):
        return {k: printable_values(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list | tuple):
        return type(value)(printable_values(v) for v in value)
    return value
