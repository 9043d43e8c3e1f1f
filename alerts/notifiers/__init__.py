"""The notifiers, one module each, all of the same shape: a Config (monitor/config_notify.py), one
constructor taking it, `send(notice)` raising NotifyError prefixed with the notifier's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from expressway_certd.alerts.notifiers.alertmanager import AlertmanagerNotifier
from expressway_certd.alerts.notifiers.email import EmailNotifier
from expressway_certd.alerts.notifiers.webex import WebexNotifier
from expressway_certd.alerts.notifiers.webhook import WebhookNotifier
from expressway_certd.alerts.notify import Notifier, Router
from expressway_certd.monitor.config_notify import (
    AlertmanagerConfig,
    EmailConfig,
    NotifierConfig,
    WebexConfig,
    WebhookConfig,
)

__all__ = [
    "AlertmanagerNotifier",
    "EmailNotifier",
    "WebexNotifier",
    "WebhookNotifier",
    "build",
    "build_router",
]


def build(config: NotifierConfig) -> Notifier:
    if isinstance(config, AlertmanagerConfig):
        return AlertmanagerNotifier(config)
    if isinstance(config, WebexConfig):
        return WebexNotifier(config)
    if isinstance(config, WebhookConfig):
        return WebhookNotifier(config)
    if isinstance(config, EmailConfig):
        return EmailNotifier(config)
    raise TypeError(f"not a notifier config: {type(config).__name__}")


def build_router(
    configs: Sequence[NotifierConfig], *, registry: CollectorRegistry | None = None, **kwargs: Any
) -> Router:
    """A router over one notifier per config entry (what the daemon wires to its bus)."""
    return Router([build(c) for c in configs], registry=registry, **kwargs)
