"""Generic webhook notifier: one JSON document per notice, HMAC-SHA256 signed when configured.

The signature header is `X-Certd-Signature: sha256=<hex HMAC of the exact body>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from expressway_certd.alerts.notifiers._http import JSONPoster
from expressway_certd.alerts.notify import Notice, NotifyError
from expressway_certd.monitor.config_base import Secret
from expressway_certd.monitor.config_notify import SIGNATURE_HEADER, WebhookConfig
from expressway_certd.monitor.errors import ConfigError

VERSION = 1


def document(notice: Notice) -> dict[str, Any]:
    """The JSON body (version 1; docs/notifications.md describes every field)."""
    e = notice.event
    return {
        "version": VERSION,
        "status": notice.status,
        "event": e.type,
        "severity": e.severity,
        "target": e.target,
        "time": e.time.isoformat(),
        "renewal_id": e.renewal_id,
        "summary": e.summary(),
        "payload": e.payload(),
        "labels": notice.key.labels(),
        "resolves": [key.labels() for key in notice.resolves],
    }


def sign(key: str, body: bytes) -> str:
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    blind_resolve = False

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self.name = config.name
        self.kind = config.kind
        self.routing = config.routing
        self._poster = JSONPoster(config.name, config.trust_anchor)

    def _reveal(self, secret: Secret) -> str:
        try:
            return secret.reveal()
        except ConfigError as exc:
            raise NotifyError(f"{self.name}: {exc}", retryable=False) from None

    async def send(self, notice: Notice) -> None:
        body = json.dumps(document(notice), separators=(",", ":")).encode()
        headers = {
            h: self._reveal(v) if isinstance(v, Secret) else v for h, v in self.config.headers
        }
        if self.config.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._reveal(self.config.secret), body)
        await self._poster.post(self.config.url, body, headers)

    async def aclose(self) -> None:
        await self._poster.aclose()
