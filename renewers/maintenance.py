"""Maintenance windows: when an Expressway may be restarted (cron start, time zone, duration)."""

from __future__ import annotations

from datetime import datetime

from expressway_certd.monitor.config import MaintenanceWindow
from expressway_certd.monitor.cron import crontab_trigger


def next_window_start(window: MaintenanceWindow, now: datetime) -> datetime:
    """`now` when inside a window, else when the next one opens (aware, in now's zone)."""
    trigger = crontab_trigger(window.cron, window.timezone)
    # The latest start not after `now` that still covers it: look from now - duration.
    candidate = trigger.get_next_fire_time(None, now - window.duration)
    if candidate is not None and candidate <= now < candidate + window.duration:
        return now
    upcoming = trigger.get_next_fire_time(None, now)
    if upcoming is None:
        raise ValueError(f"maintenance window {window.cron!r} never opens")
    return upcoming.astimezone(now.tzinfo) if now.tzinfo else upcoming  # type: ignore[no-any-return]
