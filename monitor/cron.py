"""Standard crontab expressions on APScheduler triggers (weekdays counted the cron way)."""

from __future__ import annotations

import re

from apscheduler.triggers.cron import CronTrigger

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def crontab_trigger(expression: str, timezone: str) -> CronTrigger:
    """A standard 5-field crontab (day of week 0/7 = Sunday, 6 = Saturday).

    APScheduler's own `from_crontab` counts weekdays from Monday = 0, so a window written for
    cron would open a day late; weekday numbers are translated to names first.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
    minute, hour, day, month, weekday = fields

    def name(match: re.Match[str]) -> str:
        number = int(match.group(0))
        if number > 7:
            raise ValueError(f"weekday {number} is out of range 0-7")
        return _DAYS[number]

    weekday = re.sub(r"\d+", name, weekday)
    return CronTrigger(
        minute=minute, hour=hour, day=day, month=month, day_of_week=weekday, timezone=timezone
    )
