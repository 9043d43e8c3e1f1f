"""Webex notifier: one Markdown message per notice into a room, through the messages API."""

from __future__ import annotations

from expressway_certd.alerts.notifiers._http import JSONPoster
from expressway_certd.alerts.notify import Notice, NotifyError
from expressway_certd.monitor.config_notify import WebexConfig
from expressway_certd.monitor.errors import ConfigError

MAX_MARKDOWN = 7000  # the API refuses messages over 7,439 bytes
ICONS = {"firing": "\N{WARNING SIGN}", "resolved": "\N{WHITE HEAVY CHECK MARK}", "info": ""}


def markdown(notice: Notice) -> str:
    icon = ICONS[notice.status]
    if notice.event.severity == "critical" and notice.status == "firing":
        icon = "\N{POLICE CARS REVOLVING LIGHT}"
    lines = [f"{icon} **{notice.title()}**".strip()]
    lines += [f"- {k}: `{v}`" for k, v in notice.details()]
    text = "\n".join(lines)
    if len(text.encode()) > MAX_MARKDOWN:
        text = text.encode()[: MAX_MARKDOWN - 4].decode("utf-8", "ignore") + " ..."
    return text


class WebexNotifier:
    blind_resolve = False

    def __init__(self, config: WebexConfig) -> None:
        self.config = config
        self.name = config.name
        self.kind = config.kind
        self.routing = config.routing
        self._poster = JSONPoster(config.name, config.trust_anchor)

    async def send(self, notice: Notice) -> None:
        try:
            token = self.config.token.reveal()
        except ConfigError as exc:
            raise NotifyError(f"{self.name}: {exc}", retryable=False) from None
        body = {"roomId": self.config.room_id, "markdown": markdown(notice)}
        await self._poster.post(self.config.api_url, body, {"Authorization": f"Bearer {token}"})

    async def aclose(self) -> None:
        await self._poster.aclose()
