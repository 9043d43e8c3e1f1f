"""Make text taken from certificates safe to print on a terminal or in a log line.

A certificate's subject is chosen by whoever asked for it: it can carry escape sequences that
repaint a terminal, newlines that forge extra output lines, or bidirectional overrides that
reorder what a person reads. `printable` shows every such character as a visible escape.
"""

from __future__ import annotations

import unicodedata

# Unicode categories shown escaped: controls, format characters (bidi overrides, zero width),
# line/paragraph separators, surrogates, private use and unassigned code points.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """`text` with every control, format or separator character written as \\xNN / \\uNNNN."""
    if text.isprintable() and text.isascii():
        return text
    return "".join(
        _escape(ch) if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in text
    )
