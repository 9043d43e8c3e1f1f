"""The HTTP face of the daemon (aiohttp): /metrics, /healthz, /readyz and the JSON API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from monitor.watch import EndpointState, Monitor

Ready = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]


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
        out["cert"] = {
            "subject": facts.subject,
            "issuer": facts.issuer,
            "serial": facts.serial,
            "sha256": facts.sha256,
            "not_before": facts.not_before.isoformat(),
            "not_after": facts.not_after.isoformat(),
            "sans": [str(s) for s in facts.sans],
            "key": f"{facts.key_type} {facts.key_size}",
            "key_usage": list(facts.key_usage),
            "eku": list(facts.eku),
            "ski": facts.ski,
            "aki": facts.aki,
            "signature_algorithm": facts.signature_algorithm,
            "chain_length": len(state.chain),
        }
    return out


def build_app(monitor: Monitor, registry: CollectorRegistry, ready: Ready) -> web.Application:
    app = web.Application()

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

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
        try:
            limit = min(int(request.query.get("limit", "100")), 1000)
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be an integer") from None
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

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/endpoints", endpoints)
    app.router.add_get("/api/v1/targets", targets)
    app.router.add_get("/api/v1/events", events)
    return app
