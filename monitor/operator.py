"""Who approved or cancelled a renewal (`--by NAME`, `?by=NAME`): bounded and plain.

The name goes to the database, the audit log, events, notifications and status pages, so it
is refused unless it is a short plain name: no markup, quotes, control characters or escape
sequences reach any of them.
"""

from __future__ import annotations

import re

from expressway_certd.monitor.errors import CertdError

MAX_OPERATOR_LENGTH = 64
_PLAIN = re.compile(r"[\w .@\\-]+")


def operator_name(text: str) -> str:
    """`text` stripped, if it is a plain name of at most MAX_OPERATOR_LENGTH characters
    (letters, digits, space, `. _ - @ \\`); else CertdError saying what to write."""
    name = text.strip()
    if not name or len(name) > MAX_OPERATOR_LENGTH or not _PLAIN.fullmatch(name):
        raise CertdError(
            f"operator name {name[:MAX_OPERATOR_LENGTH]!r}: use 1-{MAX_OPERATOR_LENGTH} "
            "letters, digits, spaces or . _ - @ \\ (e.g. jdoe or CORP\\jdoe), no markup"
        )
    return name
