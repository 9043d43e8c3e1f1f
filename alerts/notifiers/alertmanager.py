"""Alertmanager notifier: POSTs alerts to /api/v2/alerts; a recovery ends them with endsAt.

Problem alerts carry `endsAt = time + resolve_timeout`, so an alert whose recovery was never
seen (daemon down at the time) still ends; a repeat after the throttle window extends it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from expressway_certd.alerts.notifiers._http import JSONPoster
from expressway_certd.alerts.notify import AlertKey, Notice
from expressway_certd.monitor.config_notify import AlertmanagerConfig

API_PATH = "/api/v2/alerts"


def _ts(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


class AlertmanagerNotifier:
    blind_resolve = True  # Alertmanager ends alerts by label set: ending an unknown one is a no-op

    def __init__(self, config: AlertmanagerConfig) -> None:
        self.config = config
        self.name = config.name
        self.kind = config.kind
        self.routing = config.routing
        self._poster = JSONPoster(config.name, config.trust_anchor)

    def alerts(self, notice: Notice) -> list[dict[str, Any]]:
        """The postable alerts for one notice (exposed for tests and `plan`)."""
        event = notice.event
        if notice.resolves:
            return [
                {
                    "labels": key.labels(),
                    "annotations": {"summary": f"resolved: {notice.event.summary()}"},
                    "endsAt": _ts(event.time),
                }
                for key in notice.resolves
            ]
        key = AlertKey.of(event)
        description = "\n".join(f"{k}: {v}" for k, v in notice.details())
        return [
            {
                "labels": key.labels(),
                "annotations": {"summary": event.summary(), "description": description},
                "startsAt": _ts(event.time),
                "endsAt": _ts(event.time + self.config.resolve_timeout),
            }
        ]

    async def send(self, notice: Notice) -> None:
        await self._poster.post(self.config.url + API_PATH, self.alerts(notice))

    async def aclose(self) -> None:
        await self._poster.aclose()
