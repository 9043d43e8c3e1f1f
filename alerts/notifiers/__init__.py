"""The notifiers, one module each, all of the same shape: a Config (alerts/config.py), one
constructor taking it, `send(notice)` raising NotifyError prefixed with the notifier's name.
"""

from __future__ import annotations

from alerts.config import (
    AlertmanagerConfig,
    EmailConfig,
    NotifierConfig,
    WebexConfig,
    WebhookConfig,
)
from alerts.notifiers.alertmanager import AlertmanagerNotifier
from alerts.notifiers.email import EmailNotifier
from alerts.notifiers.webex import WebexNotifier
from alerts.notifiers.webhook import WebhookNotifier
from alerts.notify import Notifier

__all__ = [
    "AlertmanagerNotifier",
    "EmailNotifier",
    "WebexNotifier",
    "WebhookNotifier",
    "build",
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
