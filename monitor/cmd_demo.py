"""Placeholder registration for `demo` until its module lands."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    del subparsers
