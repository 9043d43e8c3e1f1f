"""Config helpers of the lab scenarios: a window that opens on a whole minute far enough away,
and keys added to the right [[unified_cm]] block."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from expressway_certd_lab.renewal import add_unified_cm_keys, window_opening_in


@pytest.mark.parametrize(
    ("now", "cron"),
    [
        (datetime(2026, 12, 3, 9, 20, 30, tzinfo=UTC), "21 9 * * *"),  # 30 s away
        (datetime(2026, 12, 3, 9, 20, 50, tzinfo=UTC), "22 9 * * *"),  # 09:21 is only 10 s away
        (datetime(2026, 12, 3, 23, 59, 45, tzinfo=UTC), "1 0 * * *"),  # over midnight
    ],
)
def test_window_opens_on_the_first_whole_minute_at_least_20_s_away(now, cron):
    assert window_opening_in(now, timedelta(seconds=20)) == (
        f'{{ cron = "{cron}", timezone = "UTC", duration = "1h" }}'
    )


def test_unified_cm_keys_go_into_the_named_block_only():
    text = '[[unified_cm]]\nname = "a"\nnodes = ["x"]\n\n[[unified_cm]]\nname = "b"\n'
    out = add_unified_cm_keys(text, "b", "k = 1")
    assert out == '[[unified_cm]]\nname = "a"\nnodes = ["x"]\n\n[[unified_cm]]\nname = "b"\nk = 1\n'
    with pytest.raises(ValueError, match="no \\[\\[unified_cm\\]\\] named 'c'"):
        add_unified_cm_keys(text, "c", "k = 1")
