"""Fakes shared by the unit tests of the pipeline and the renewal manager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


class FakeDevices:
    """Devices with one fake Expressway for every target and no Unified CM (the code under test
    must not reach one: `no_ucm` says why)."""

    def __init__(self, box: Any, no_ucm: str = "not used") -> None:
        self.box = box
        self.no_ucm = no_ucm

    @asynccontextmanager
    async def expressway(self, target: Any) -> AsyncIterator[Any]:
        yield self.box

    def unified_cm(self, ucm: Any) -> Any:
        raise AssertionError(self.no_ucm)
