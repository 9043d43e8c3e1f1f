from __future__ import annotations

import asyncio
from datetime import timedelta

from expressway_certd.renewers.pipeline import locks as pipeline


async def test_keep_alive_renews_while_the_body_runs(monkeypatch):
    monkeypatch.setattr(pipeline, "LEASE", timedelta(seconds=0.15))
    calls = 0

    async def renew() -> bool:
        nonlocal calls
        calls += 1
        return True

    async with pipeline.keep_alive(renew):
        await asyncio.sleep(0.35)
    seen = calls
    assert seen >= 3  # every 0.05 s
    await asyncio.sleep(0.15)
    assert calls == seen  # stopped with the body


async def test_a_failing_heartbeat_does_not_stop_the_body(monkeypatch):
    monkeypatch.setattr(pipeline, "LEASE", timedelta(seconds=0.06))

    async def renew() -> bool:
        raise OSError("database gone for a moment")

    async with pipeline.keep_alive(renew):
        await asyncio.sleep(0.1)
