from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from expressway_certd.monitor.config import MaintenanceWindow
from expressway_certd.renewers.maintenance import next_window_start

SAT_2AM_ZURICH = MaintenanceWindow("0 2 * * 6", "Europe/Zurich", timedelta(hours=3))


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # Friday noon UTC -> Saturday 02:00 Zurich (01:00 UTC in winter)
        (datetime(2026, 11, 27, 12, 0, tzinfo=UTC), datetime(2026, 11, 28, 1, 0, tzinfo=UTC)),
        # inside the window: now
        (datetime(2026, 11, 28, 2, 30, tzinfo=UTC), datetime(2026, 11, 28, 2, 30, tzinfo=UTC)),
        # just after it closed (04:00 UTC = 05:00 Zurich): next Saturday
        (datetime(2026, 11, 28, 4, 0, 1, tzinfo=UTC), datetime(2026, 12, 5, 1, 0, tzinfo=UTC)),
        # summer time: 02:00 Zurich is 00:00 UTC
        (datetime(2026, 7, 1, 12, 0, tzinfo=UTC), datetime(2026, 7, 4, 0, 0, tzinfo=UTC)),
    ],
)
def test_next_window_start(now, expected):
    assert next_window_start(SAT_2AM_ZURICH, now) == expected
