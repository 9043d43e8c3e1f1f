"""Terminal-safe text: `printable(s)` escapes what a hostile certificate, server or CA could use
to steer an operator's terminal (ESC sequences, NUL, other C0 and C1 controls, DEL) or to make
text read differently from what it is (bidirectional overrides and isolates, zero-width and other
format characters, line separators, private-use and unassigned code points).

A certificate's subject is chosen by whoever asked for it: it can carry escape sequences that
repaint a terminal, newlines that forge extra output lines, or bidirectional overrides that
reorder what a person reads. Every human-readable output (scan, inspect, decode, check-cert,
status, plan, the status page, console logs) passes the values it did not write itself through
`printable`; JSON output and /metrics escape on their own.
"""

from __future__ import annotations

import unicodedata
from typing import TypeVar

T = TypeVar("T")

# Unicode categories shown escaped: controls (C0, DEL, C1), format characters (bidi overrides
# and isolates, zero width), line/paragraph separators, surrogates, private use, unassigned.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _unsafe(char: str, keep_newlines: bool) -> bool:
    if char == "\n" and keep_newlines:
        return False
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(value: object, *, keep_newlines: bool = False) -> str:
    """`str(value)` with every control, format, separator, private-use or unassigned character
    written as `\\xNN` / `\\uNNNN` / `\\UNNNNNNNN`; everything else, other non-ASCII text
    included, as is."""
    text = value if isinstance(value, str) else str(value)
    if text.isascii() and text.isprintable():
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
