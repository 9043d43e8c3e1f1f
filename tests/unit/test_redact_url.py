"""One way to show a database URL without its password (check-config and the store's errors)."""

from __future__ import annotations

import pytest

from expressway_certd.monitor.config_base import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("/var/lib/certd/state.db", "/var/lib/certd/state.db"),
        ("sqlite+aiosqlite:////var/lib/state.db", "sqlite+aiosqlite:////var/lib/state.db"),
        ("postgresql://certd@db/certd", "postgresql://certd@db/certd"),
        ("postgresql+asyncpg://certd:s3cret@db/certd", "postgresql+asyncpg://certd:***@db/certd"),
        ("postgresql://certd:p@ss:w@rd@db:5432/certd", "postgresql://certd:***@db:5432/certd"),
        ("postgresql://certd@db/certd?password=s3cret", "postgresql://certd@db/certd?password=***"),
        (
            "postgresql://db/certd?user=certd&PASSWORD=s3cret&ssl=require",
            "postgresql://db/certd?user=certd&PASSWORD=***&ssl=require",
        ),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url) and "w@rd" not in redact_url(url)
