"""Trust map metrics: the daemon's own latest map (`render`), or the latest `trust-map` result.

`expressway-certd trust-map` writes `<data_dir>/trust-map.json`; the daemon exports it:
`expressway_trust_relation_ok{from,to,relation}` (1 ok or not yet broken, 0 broken; relations
that could not be read are left out), `expressway_trust_relation_break_timestamp_seconds` (when
a relation breaks or broke) and `expressway_trust_map_generated_timestamp_seconds` (how old the
map is). No file, no series.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from expressway_certd.alerts.exposition import label_value

TRUST_MAP_STATE = "trust-map.json"
LABELS = ("from", "to", "relation")

FAMILIES = (
    (
        "expressway_trust_relation_ok",
        "1 when the verifier trusts what the presenter sends (from the latest trust-map run).",
    ),
    (
        "expressway_trust_relation_break_timestamp_seconds",
        "When the relation breaks (a trusted CA expires first, a pending renewal's new CA is "
        "not trusted) or broke.",
    ),
    ("expressway_trust_map_generated_timestamp_seconds", "When the trust map was computed."),
)


def _labels(rel: dict[str, Any]) -> str:
    return ",".join(f'{n}="{label_value(str(rel.get(n, "")))}"' for n in LABELS)


def _ts(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def render(doc: dict[str, Any]) -> str:
    """Exposition text for one trust-map document."""
    ok: dict[str, float] = {}
    breaks: dict[str, float] = {}
    for rel in doc.get("relations", []):
        if not isinstance(rel, dict) or rel.get("status") == "unknown":
            continue
        key = _labels(rel)
        value = 0.0 if rel.get("status") == "broken" else 1.0
        ok[key] = min(ok.get(key, 1.0), value)
        at = _ts(rel.get("breaks_at"))
        if at is not None:
            breaks[key] = min(breaks.get(key, at), at)
    generated = _ts(doc.get("generated_at"))
    rows = {
        FAMILIES[0][0]: [f"{{{k}}} {v!r}" for k, v in sorted(ok.items())],
        FAMILIES[1][0]: [f"{{{k}}} {v!r}" for k, v in sorted(breaks.items())],
        FAMILIES[2][0]: [f" {generated!r}"] if generated is not None else [],
    }
    out: list[str] = []
    for name, help_text in FAMILIES:
        if rows[name]:
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            out += [f"{name}{row}" for row in rows[name]]
    return "\n".join(out) + "\n" if out else ""


def exposition(data_dir: Path) -> str:
    """The metrics of `<data_dir>/trust-map.json`, or nothing when there is none (or it is bad)."""
    try:
        doc = json.loads((data_dir / TRUST_MAP_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return render(doc) if isinstance(doc, dict) else ""
