"""CA connectors (ACME, EST, Microsoft AD CS) behind one interface (see base.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from expressway_certd.monitor.config_ca import CAConfig
from expressway_certd.monitor.events import Event
from expressway_certd.renewers.ca.acme_config import ACMEConfig
from expressway_certd.renewers.ca.adcs_config import ADCSConfig
from expressway_certd.renewers.ca.base import CAConnector
from expressway_certd.renewers.ca.est_config import ESTConfig
from expressway_certd.renewers.ca.manual_config import ManualConfig


def build_connector(
    config: CAConfig,
    data_dir: Path,
    *,
    wait: timedelta = timedelta(minutes=2),
    events: Callable[[Event], Awaitable[None]] | None = None,
) -> CAConnector:
    """The connector for one `[ca.NAME]` table; `wait` bounds an ACME submit/poll call;
    `events` (the daemon's EventBus.publish) receives CA-level events (AcmeAccountRecreated)."""
    if isinstance(config, ACMEConfig):
        from expressway_certd.renewers.ca.acme import ACMEConnector  # noqa: PLC0415 - optional: acme, josepy, requests

        return ACMEConnector(config, data_dir=data_dir, wait=wait, events=events)
    if isinstance(config, ESTConfig):
        from expressway_certd.renewers.ca.est import ESTConnector  # noqa: PLC0415 - optional: aiohttp client stack

        return ESTConnector(config, data_dir=data_dir)
    if isinstance(config, ADCSConfig):
        from expressway_certd.renewers.ca.adcs import ADCSConnector  # noqa: PLC0415 - optional: aiohttp, spnego

        return ADCSConnector(config, data_dir=data_dir)
    if isinstance(config, ManualConfig):
        from expressway_certd.renewers.ca.manual import ManualConnector  # noqa: PLC0415 - loaded like the others

        return ManualConnector(config, data_dir=data_dir)
    raise TypeError(f"unknown CA config {type(config).__name__}")
