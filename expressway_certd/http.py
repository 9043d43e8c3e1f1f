"""The HTTP face of the daemon (aiohttp): /metrics, /healthz, /readyz and the JSON API."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from expressway_certd.alerts.trust import exposition as trust_exposition
from expressway_certd.alerts.trust import render as trust_render
from expressway_certd.deadline_metrics import DeadlineCache
from expressway_certd.deadline_metrics import render as deadline_exposition
from expressway_certd.monitor.config_base import Secret
from expressway_certd.monitor.errors import CertdError
from expressway_certd.monitor.facts import facts_json
from expressway_certd.monitor.operator import operator_name
from expressway_certd.monitor.statuspage import (
    CONTENT_SECURITY_POLICY,
    PageView,
    RiskView,
    read_trust_doc,
    read_trust_map,
    render_page,
    renewal_views,
    target_views,
    trust_view,
)
from expressway_certd.monitor.store import RenewalRow, StepRow
from expressway_certd.monitor.watch import EndpointState, Monitor
from expressway_certd.renewers.pipeline import (
    KINDS,
    SERVER,
    RecordError,
    RenewalRecord,
    kind_of,
    record_of,
)

if TYPE_CHECKING:
    from expressway_certd.renewers.deadline import DeadlineEstimate
    from expressway_certd.renewers.manager import RenewalManager
    from expressway_certd.trustmap_live import TrustMapResult

Ready = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
EVENTS_CAP = 1000  # most events one GET /api/v1/events returns


def _bearer_matches(request: web.Request, tokens: tuple[Secret | None, ...]) -> bool:
    """Whether the request carries `Authorization: Bearer T` for one of `tokens` (never empty)."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return False
    given = header.removeprefix("Bearer ").encode()
    matched = False
    for token in tokens:
        if token is None:
            continue
        expected = token.reveal().encode()
        # Secret.reveal refuses empty values; the length check keeps "Bearer " from ever passing.
        matched |= bool(expected) and hmac.compare_digest(given, expected)
    return matched


def endpoint_json(state: EndpointState, now_ts: float | None = None) -> dict[str, Any]:
    """The API's view of one endpoint (same keys as `scan --json` where they overlap)."""
    facts = state.facts
    out: dict[str, Any] = {
        "target": state.target,
        "endpoint": state.endpoint.address,
        "host": state.endpoint.host,
        "port": state.endpoint.port,
        "service": state.endpoint.service,
        "starttls": state.endpoint.starttls,
        "observed_at": state.observed_at.isoformat(),
        "ok": state.ok,
        "error_class": state.error_class,
        "error": state.error,
        "duration_seconds": round(state.duration, 6),
        "tls_version": state.tls_version,
        "last_ok_at": state.ok_observed_at.isoformat() if state.ok_observed_at else None,
        "last_change_at": state.last_change_at.isoformat() if state.last_change_at else None,
        "chain_verified": state.chain_verified,
        "verify_error": state.verify_error,
        "san_problem": state.san_problem,
        "eku_problem": state.eku_problem,
        "cert": None,
    }
    if facts is not None:
        out["cert"] = facts_json(facts) | {"chain_length": len(state.chain)}
    return out


def renewal_json(row: RenewalRow, steps: list[StepRow] | None = None) -> dict[str, Any]:
    try:
        record = record_of(row)
    except RecordError:  # shown without its record; the runner blocks it, naming the fault
        record = RenewalRecord()
    out: dict[str, Any] = {
        "id": row.id,
        "target": row.target,
        "kind": record.kind,
        "status": row.status,
        "stage": row.stage,
        "reason": row.reason,
        "message": row.message,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "next_at": row.next_at.isoformat() if row.next_at else None,
        "approved_by": record.approved_by,
        "ca_changed": record.ca_changed,
        "installed_sha256": record.installed_sha256,
        "csr_pem": record.csr_pem,
    }
    if steps is not None:
        out["steps"] = [
            {
                "stage": s.stage,
                "result": s.result,
                "at": s.at.isoformat(),
                "seconds": s.seconds,
                "message": s.message,
            }
            for s in steps
        ]
    return out


def build_app(
    monitor: Monitor,
    registry: CollectorRegistry,
    ready: Ready,
    *,
    renewals: RenewalManager | None = None,
    api_token: Secret | None = None,
    api_read_token: Secret | None = None,
    exposition: Callable[[], str] | None = None,
    trust_map: Callable[[], TrustMapResult | None] | None = None,
    deadline_cache: DeadlineCache | None = None,
) -> web.Application:
    """The routes; `api_token` guards the mutating calls, `api_read_token` (when set) the reads.

    /metrics, /healthz and /readyz stay open: Prometheus and load balancers scrape them.
    """

    def require_token(request: web.Request) -> None:
        if api_token is None:
            raise web.HTTPForbidden(
                text="mutating API calls are disabled: set [daemon] api_token (a secret reference)"
            )
        if not _bearer_matches(request, (api_token,)):
            raise web.HTTPUnauthorized(
                text="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    @web.middleware
    async def read_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            api_read_token is not None
            and request.method in ("GET", "HEAD")
            and (request.path == "/" or request.path.startswith("/api/"))
            and not _bearer_matches(request, (api_read_token, api_token))
        ):
            raise web.HTTPUnauthorized(
                text="the read API needs a bearer token: [daemon] api_read_token or api_token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await handler(request)

    app = web.Application(middlewares=[read_guard])
    risk = deadline_cache or DeadlineCache.of(monitor)

    def latest_map() -> TrustMapResult | None:
        return trust_map() if trust_map is not None else None

    def manager() -> RenewalManager:
        if renewals is None:
            raise web.HTTPNotFound(text="no [expressway.renewal] is configured")
        return renewals

    async def list_renewals(request: web.Request) -> web.Response:
        rows = await monitor.store.renewals_for(request.query.get("target"), limit=100)
        return web.json_response([renewal_json(r) for r in rows])

    async def get_renewal(request: web.Request) -> web.Response:
        row = await monitor.store.renewal(request.match_info["id"])
        if row is None:
            raise web.HTTPNotFound(text="no such renewal")
        return web.json_response(renewal_json(row, await monitor.store.steps(row.id)))

    async def approve(request: web.Request) -> web.Response:
        require_token(request)
        try:
            who = operator_name(request.query.get("by", "api"))
        except CertdError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        try:
            row = await manager().pipeline.approve(request.match_info["id"], who)
        except CertdError as exc:
            raise web.HTTPConflict(text=str(exc)) from None
        manager().spawn(row.id)
        return web.json_response(renewal_json(row))

    async def cancel(request: web.Request) -> web.Response:
        require_token(request)
        try:
            who = operator_name(request.query.get("by", "api"))
        except CertdError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        try:
            row = await manager().pipeline.cancel(request.match_info["id"], who)
        except CertdError as exc:
            raise web.HTTPConflict(text=str(exc)) from None
        return web.json_response(renewal_json(row))

    async def renew(request: web.Request) -> web.Response:
        require_token(request)
        kind = request.query.get("kind", SERVER)
        if kind not in KINDS:
            raise web.HTTPBadRequest(text=f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        try:
            row = await manager().pipeline.start(
                request.match_info["name"], "ManualRequest: API", kind=kind
            )
        except CertdError as exc:
            raise web.HTTPConflict(text=str(exc)) from None
        if kind_of(row) != kind:
            raise web.HTTPConflict(
                text=f"{row.target}: renewal {row.id} of the {kind_of(row)} certificate is "
                f"active (stage {row.stage}, {row.status}); the box takes one renewal at a "
                f"time (one CSR slot): ask again for the {kind} certificate when it has ended"
            )
        manager().spawn(row.id)
        return web.json_response(renewal_json(row), status=202)

    async def deadlines(now: datetime) -> list[DeadlineEstimate] | None:
        """None when no target is renewed or the estimate cannot be made (store down)."""
        if not any(e.renewal for e in monitor.config.expressways):
            return None
        try:
            return await risk.get(now)
        except (CertdError, ValueError):
            return None

    async def metrics(_: web.Request) -> web.Response:
        body = deadline_exposition(await deadlines(datetime.now(UTC)) or []).encode()
        body += generate_latest(registry)
        if exposition is not None:
            body = exposition().encode() + body
        computed = latest_map()
        trust = (
            trust_render(computed.doc())
            if computed is not None
            else trust_exposition(monitor.config.daemon.data_dir)
        )
        body = trust.encode() + body
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status_page(_: web.Request) -> web.Response:
        now = datetime.now(UTC)
        configured = monitor.configured_keys()
        states = {k: s for k, s in monitor.states.items() if k in configured}
        rows = await monitor.store.renewals_for(None, limit=20)
        steps = {r.id: await monitor.store.steps(r.id) for r in rows}
        found = await deadlines(now)
        risks = (
            tuple(
                RiskView(e.target, e.margin.total_seconds(), e.dominating, e.explanation())
                for e in found
                if e.at_risk()
            )
            if found is not None
            else None
        )
        view = PageView(
            now,
            target_views(monitor.config, states, now),
            renewal_views(rows, steps),
            risks=risks,
            trust_map_svg=trust_svg(),
            trust=trust_view(doc) if (doc := trust_doc()) is not None else None,
        )
        return web.Response(
            text=render_page(view),
            content_type="text/html",
            headers={
                "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
            },
        )

    def trust_doc() -> dict[str, Any] | None:
        computed = latest_map()
        if computed is not None:
            return computed.doc()
        return read_trust_doc(monitor.config.daemon.data_dir)  # written by `trust-map`

    def trust_svg() -> bytes | None:
        computed = latest_map()
        if computed is not None:
            return computed.svg
        return read_trust_map(monitor.config.daemon.data_dir)  # written by `trust-map`

    async def trust_map_json(_: web.Request) -> web.Response:
        computed = latest_map()
        if computed is None:
            raise web.HTTPNotFound(
                text="the daemon has not computed a trust map: it needs API credentials of at "
                "least one [[expressway]]; the first map follows the first polls after the start"
            )
        return web.json_response(computed.doc())

    async def trust_map_svg(_: web.Request) -> web.Response:
        computed = latest_map()
        if computed is None or computed.svg is None:
            raise web.HTTPNotFound(
                text="no trust map picture: none computed yet, or Graphviz 'dot' is not "
                "installed (Debian package graphviz)"
            )
        return web.Response(
            body=computed.svg,
            content_type="image/svg+xml",
            headers={
                # Opened directly, the SVG is a document: no scripts, nothing loaded.
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ok, detail = await ready()
        return web.json_response({"ready": ok, **detail}, status=200 if ok else 503)

    async def endpoints(request: web.Request) -> web.Response:
        target = request.query.get("target")
        states = sorted(monitor.states.values(), key=lambda s: s.key)
        configured = monitor.configured_keys()
        items = [
            endpoint_json(s)
            for s in states
            if s.key in configured and (target is None or s.target == target)
        ]
        return web.json_response(items)

    async def targets(_: web.Request) -> web.Response:
        out = []
        for exp in monitor.config.expressways:
            out.append(
                {
                    "name": exp.name,
                    "address": exp.address,
                    "role": exp.role,
                    "cluster": exp.cluster,
                    "version": exp.version,
                    "endpoints": [ep.address for ep in exp.endpoints],
                }
            )
        return web.json_response(out)

    async def events(request: web.Request) -> web.Response:
        text = request.query.get("limit", "100")
        if not (text.isascii() and text.isdigit() and len(text) <= 9) or int(text) < 1:
            raise web.HTTPBadRequest(
                text=f"limit must be a positive whole number (at most {EVENTS_CAP} are returned)"
            )
        limit = min(int(text), EVENTS_CAP)
        rows = await monitor.store.events(target=request.query.get("target"), limit=limit)
        return web.json_response(
            [
                {
                    "time": r.time.isoformat(),
                    "type": r.type,
                    "target": r.target,
                    "severity": r.severity,
                    "summary": r.summary,
                    "payload": r.payload,
                }
                for r in rows
            ]
        )

    app.router.add_get("/", status_page)  # same access as GET /api/v1/* (read-only)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/endpoints", endpoints)
    app.router.add_get("/api/v1/targets", targets)
    app.router.add_get("/api/v1/events", events)
    app.router.add_get("/api/v1/trust-map", trust_map_json)
    app.router.add_get("/api/v1/trust-map.svg", trust_map_svg)
    app.router.add_get("/api/v1/renewals", list_renewals)
    app.router.add_get("/api/v1/renewals/{id}", get_renewal)
    app.router.add_post("/api/v1/renewals/{id}/approve", approve)
    app.router.add_post("/api/v1/renewals/{id}/cancel", cancel)
    app.router.add_post("/api/v1/targets/{name}/renew", renew)
    return app
