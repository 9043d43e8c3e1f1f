"""The read-only status page served at `/`: plain HTML rendered on the server.

Targets with days left, renewals with their stage timeline, deadline risks and the trust map
(earliest break, the relations that are broken, will break or unknown, and the picture) when
the daemon has them. No scripts, no external assets, no build step: the page is
one HTML document whose Content-Security-Policy forbids everything but its own inline style
and `data:` images. Every value comes from certificates or boxes, so every value is escaped
(HTML, then control and bidi characters made visible by `monitor.text`).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from expressway_certd.monitor.config import Config
from expressway_certd.monitor.store import RenewalRow, StepRow
from expressway_certd.monitor.text import printable
from expressway_certd.monitor.watch import EndpointState

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class TargetView:
    name: str
    role: str | None
    version: str | None
    days_left: float | None  # of the certificate expiring first on any endpoint
    not_after: datetime | None
    subject: str | None
    endpoints_ok: int
    endpoints: int
    problems: tuple[str, ...]


@dataclass(frozen=True)
class StepView:
    stage: str
    result: str
    at: datetime
    message: str


@dataclass(frozen=True)
class RenewalView:
    id: str
    target: str
    status: str
    stage: str
    message: str
    created_at: datetime
    next_at: datetime | None
    steps: tuple[StepView, ...]


@dataclass(frozen=True)
class RiskView:
    """A deadline risk: the renewal may not complete before the certificate expires."""

    target: str
    margin_seconds: float
    factor: str
    explanation: str


@dataclass(frozen=True)
class RelationView:
    """One relation of the trust map (see renewers/trustmap.py)."""

    presenter: str
    verifier: str
    relation: str
    store: str
    status: str  # "ok", "broken", "will break", "unknown"
    reason: str
    breaks_at: datetime | None
    presenter_cert: str = "server"  # "client": an X15.5 box presents its client certificate

    @property
    def presenter_label(self) -> str:
        if self.presenter_cert == "client":
            return f"{self.presenter} (client cert)"
        return self.presenter


@dataclass(frozen=True)
class TrustView:
    generated_at: datetime | None
    relations: tuple[RelationView, ...]
    earliest_break: datetime | None


@dataclass(frozen=True)
class PageView:
    generated_at: datetime
    targets: tuple[TargetView, ...]
    renewals: tuple[RenewalView, ...]
    risks: tuple[RiskView, ...] | None = None  # None: not computed by this daemon
    trust_map_svg: bytes | None = None  # a Graphviz picture, shown as a data: image
    trust: TrustView | None = None  # the relations of the latest trust map


def target_views(
    config: Config, states: Mapping[Any, EndpointState], now: datetime
) -> tuple[TargetView, ...]:
    """One row per configured Expressway, from the monitor's endpoint states."""
    rows = []
    for exp in config.expressways:
        mine = [s for s in states.values() if s.target == exp.name]
        with_cert = [s for s in mine if s.facts is not None]
        first = min(with_cert, key=lambda s: s.facts.not_after) if with_cert else None  # type: ignore[union-attr]
        problems: list[str] = []
        for s in sorted(mine, key=lambda s: s.endpoint.port):
            where = f"{s.endpoint.service} {s.endpoint.host}:{s.endpoint.port}"
            if not s.ok:
                problems.append(f"{where}: probe failed ({s.error_class}): {s.error or ''}")
            if s.chain_verified is False:
                problems.append(f"{where}: chain not trusted: {s.verify_error or ''}")
            for extra in (s.san_problem, s.eku_problem):
                if extra:
                    problems.append(f"{where}: {extra}")
        facts = first.facts if first is not None else None
        rows.append(
            TargetView(
                name=exp.name,
                role=exp.role,
                version=exp.version,
                days_left=facts.days_left(now) if facts else None,
                not_after=facts.not_after if facts else None,
                subject=facts.subject if facts else None,
                endpoints_ok=sum(1 for s in mine if s.ok),
                endpoints=len(exp.endpoints),
                problems=tuple(problems),
            )
        )
    return tuple(rows)


def renewal_views(
    rows: Iterable[RenewalRow], steps: Mapping[str, Sequence[StepRow]]
) -> tuple[RenewalView, ...]:
    return tuple(
        RenewalView(
            id=r.id,
            target=r.target,
            status=r.status,
            stage=r.stage,
            message=r.message,
            created_at=r.created_at,
            next_at=r.next_at,
            steps=tuple(StepView(s.stage, s.result, s.at, s.message) for s in steps.get(r.id, ())),
        )
        for r in rows
    )


TRUST_MAP_FILE = "trust-map.svg"  # written by `expressway-certd trust-map`
TRUST_MAP_DOC = "trust-map.json"  # written by `expressway-certd trust-map`
TRUST_MAP_MAX_BYTES = 4 * 1024 * 1024


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def trust_view(doc: Mapping[str, Any]) -> TrustView:
    """The page's view of a trust map document (`trust-map --json`, `/api/v1/trust-map`);
    entries that are not objects are skipped, missing fields read as empty."""
    rows = []
    raw = doc.get("relations")
    for r in raw if isinstance(raw, list) else []:
        if not isinstance(r, dict):
            continue
        rows.append(
            RelationView(
                presenter=str(r.get("from", "")),
                verifier=str(r.get("to", "")),
                relation=str(r.get("relation", "")),
                store=str(r.get("store", "")),
                status=str(r.get("status", "unknown")),
                reason=str(r.get("reason") or ""),
                breaks_at=_moment(r.get("breaks_at")),
                presenter_cert=str(r.get("presenter_cert") or "server"),
            )
        )
    return TrustView(
        _moment(doc.get("generated_at")), tuple(rows), _moment(doc.get("earliest_break"))
    )


def read_trust_doc(data_dir: Path) -> dict[str, Any] | None:
    """The latest `trust-map` JSON document, when there is one (and it is not huge or bad)."""
    path = data_dir / TRUST_MAP_DOC
    try:
        if path.stat().st_size > TRUST_MAP_MAX_BYTES:
            return None
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def read_trust_map(data_dir: Path) -> bytes | None:
    """The latest trust map picture, when `trust-map` has written one (and it is not huge)."""
    path = data_dir / TRUST_MAP_FILE
    try:
        if path.stat().st_size > TRUST_MAP_MAX_BYTES:
            return None
        return path.read_bytes()
    except OSError:
        return None


# --- rendering ------------------------------------------------------------------------------


def esc(value: object) -> str:
    return html.escape(printable(str(value)), quote=True)


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "-"


def _days_class(days: float | None) -> str:
    if days is None:
        return "unknown"
    if days <= 7:
        return "bad"
    if days <= 30:
        return "warn"
    return "ok"


def _days_text(days: float | None) -> str:
    if days is None:
        return "no certificate seen"
    if days < 0:
        return f"expired {-days:.0f} days ago"
    return f"{days:.0f} days left"


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#111;background:#fff}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.4em 0}
th,td{border:1px solid #bbb;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#eee}.ok{background:#d8f0d8}.warn{background:#fbeec2}.bad{background:#f6cccc}
.unknown{background:#e4e4e4}ol.timeline{margin:.2em 0;padding-left:1.4em}
.small{font-size:.85em;color:#444}img.trustmap{max-width:100%;border:1px solid #bbb}
"""


def _targets_html(targets: Sequence[TargetView]) -> list[str]:
    out = ["<h2>Certificates</h2>"]
    if not targets:
        return [*out, "<p>No Expressway is configured.</p>"]
    out.append(
        "<table id='targets'><tr><th>Expressway</th><th>Role</th><th>Days left</th>"
        "<th>Expires</th><th>Subject</th><th>Endpoints up</th><th>Problems</th></tr>"
    )
    for t in sorted(targets, key=lambda t: (t.days_left is None, t.days_left or 0.0, t.name)):
        role = f"Expressway-{t.role.upper()}" if t.role else "-"
        if t.version:
            role += f" {t.version}"
        problems = "<br>".join(esc(p) for p in t.problems) or "none"
        out.append(
            f"<tr><td>{esc(t.name)}</td><td>{esc(role)}</td>"
            f"<td class='{_days_class(t.days_left)}'>{esc(_days_text(t.days_left))}</td>"
            f"<td>{esc(_when(t.not_after))}</td><td>{esc(t.subject or '-')}</td>"
            f"<td>{t.endpoints_ok} of {t.endpoints}</td><td>{problems}</td></tr>"
        )
    out.append("</table>")
    return out


def _renewals_html(renewals: Sequence[RenewalView]) -> list[str]:
    out = ["<h2>Renewals</h2>"]
    if not renewals:
        return [*out, "<p>No renewals recorded.</p>"]
    for r in renewals:
        nxt = f", next attempt {esc(_when(r.next_at))}" if r.next_at else ""
        out.append(
            f"<h3>{esc(r.target)}: {esc(r.status)} at stage {esc(r.stage)}</h3>"
            f"<p class='small'>renewal {esc(r.id)}, started {esc(_when(r.created_at))}{nxt}</p>"
            f"<p>{esc(r.message)}</p><ol class='timeline'>"
        )
        for s in r.steps:
            out.append(
                f"<li>{esc(_when(s.at))} <b>{esc(s.stage)}</b> {esc(s.result)}: "
                f"{esc(s.message)}</li>"
            )
        out.append("</ol>")
    return out


def _risks_html(risks: Sequence[RiskView] | None) -> list[str]:
    if risks is None:
        return []
    out = ["<h2>Deadline risks</h2>"]
    if not risks:
        return [*out, "<p>Every renewal can complete before its certificate expires.</p>"]
    out.append(
        "<table id='risks'><tr><th>Expressway</th><th>Margin</th><th>Dominated by</th><th>Why</th></tr>"
    )
    for risk in risks:
        days = risk.margin_seconds / 86400
        cls = "bad" if days < 0 else "warn"
        out.append(
            f"<tr><td>{esc(risk.target)}</td><td class='{cls}'>{days:.1f} days</td>"
            f"<td>{esc(risk.factor)}</td><td>{esc(risk.explanation)}</td></tr>"
        )
    out.append("</table>")
    return out


_STATUS_CLASS = {"broken": "bad", "will break": "warn", "unknown": "unknown"}
_STATUS_ORDER = {"broken": 0, "will break": 1, "unknown": 2}


def _relations_html(trust: TrustView) -> list[str]:
    first = trust.earliest_break
    out = [
        f"<p class='small'>Computed {esc(_when(trust.generated_at))}.</p>",
        f"<p id='earliest-break'>Earliest break: <b>{esc(_when(first))}</b></p>"
        if first
        else "<p id='earliest-break'>Nothing will break.</p>",
    ]
    bad = sorted(
        (r for r in trust.relations if r.status != "ok"),
        key=lambda r: (
            _STATUS_ORDER.get(r.status, 3),
            r.breaks_at or datetime.max.replace(tzinfo=UTC),
            r.presenter,
            r.verifier,
        ),
    )
    if not bad:
        return [*out, f"<p>All {len(trust.relations)} relations are ok.</p>"]
    out.append(
        "<table id='trust'><tr><th>From (presents)</th><th>To (verifies)</th><th>Relation</th>"
        "<th>Status</th><th>Breaks</th><th>Why</th></tr>"
    )
    for r in bad:
        out.append(
            f"<tr><td>{esc(r.presenter_label)}</td><td>{esc(r.verifier)}</td>"
            f"<td>{esc(r.relation)} ({esc(r.store)})</td>"
            f"<td class='{_STATUS_CLASS.get(r.status, 'unknown')}'>{esc(r.status)}</td>"
            f"<td>{esc(_when(r.breaks_at))}</td><td>{esc(r.reason or '-')}</td></tr>"
        )
    out.append("</table>")
    ok = len(trust.relations) - len(bad)
    return [*out, f"<p class='small'>{ok} of {len(trust.relations)} relations are ok.</p>"]


def _trust_map_html(svg: bytes | None, trust: TrustView | None) -> list[str]:
    if svg is None and trust is None:
        return []
    out = ["<h2>Trust map</h2>"]
    if trust is not None:
        out += _relations_html(trust)
    if svg is not None:
        data = base64.b64encode(svg).decode()
        # As an <img>, an SVG cannot run scripts or load anything, whatever its labels say.
        out.append(f"<img class='trustmap' alt='trust map' src='data:image/svg+xml;base64,{data}'>")
    return out


def render_page(view: PageView) -> str:
    """The whole document."""
    body = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<title>expressway-certd status</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>expressway-certd status</h1>",
        f"<p class='small'>Generated {esc(_when(view.generated_at))}; read-only.</p>",
        *_targets_html(view.targets),
        *_risks_html(view.risks),
        *_renewals_html(view.renewals),
        *_trust_map_html(view.trust_map_svg, view.trust),
        "</body></html>",
    ]
    return "\n".join(body)
