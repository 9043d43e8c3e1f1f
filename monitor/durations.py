"""Durations as operators write them: "90s", "5m", "12h", "30d", "2w", or a lifetime fraction "1/3"."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.ASCII)
_FRACTION = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$", re.ASCII)
# Longer than anything an operator means (a retention of a century) and far below
# timedelta's own limit, so arithmetic with "now" never overflows.
MAX_DURATION = timedelta(days=36500)


@dataclass(frozen=True)
class Fraction:
    """A fraction of a certificate's lifetime, e.g. 1/3."""

    numerator: int
    denominator: int

    @property
    def value(self) -> float:
        return self.numerator / self.denominator

    def __str__(self) -> str:
        return f"{self.numerator}/{self.denominator}"


def parse_duration(text: str | int | float) -> timedelta:
    """Parse "30d", "12h", "5m", "90s", "2w" (or a number of seconds). ValueError when unreadable."""
    if isinstance(text, bool):
        raise ValueError(f"expected a duration like '5m' or '30d', got {text!r}")
    if isinstance(text, int | float):
        # Compared before float(): an integer of 400 digits does not convert.
        seconds = math.inf if text > MAX_DURATION.total_seconds() else float(text)
    elif isinstance(text, str):
        match = _DURATION.match(text)
        if not match:
            raise ValueError(
                f"expected a duration like '90s', '5m', '12h', '30d' or '2w', got {text[:40]!r}"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(f"expected a duration like '5m' or '30d', got a {type(text).__name__}")
    if math.isnan(seconds) or seconds <= 0:
        raise ValueError(f"duration must be positive, got {_short(text)}")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"duration must be at most {MAX_DURATION.days}d, got {_short(text)}")
    return timedelta(seconds=seconds)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_duration_or_fraction(text: str | int | float) -> timedelta | Fraction:
    """A duration, or a fraction of lifetime such as "1/3" (strictly between 0 and 1)."""
    if isinstance(text, str):
        match = _FRACTION.match(text)
        if match:
            num, den = int(match.group(1)), int(match.group(2))
            if den == 0 or not 0 < num < den:
                raise ValueError(f"fraction must be between 0 and 1, like '1/3', got {text!r}")
            return Fraction(num, den)
    return parse_duration(text)


def format_duration(delta: timedelta) -> str:
    """Short human form: "29d 4h", "3h 12m", "45s"."""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes}m"
    if minutes:
        return f"{sign}{minutes}m {secs}s"
    return f"{sign}{secs}s"


def utcnow() -> datetime:
    """Now, aware UTC: the default clock everywhere (tests inject their own)."""
    return datetime.now(UTC)
