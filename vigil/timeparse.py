"""Reading times people type: epoch seconds, ISO 8601, Wazuh's format, or `15m` / `2h` / `1d` ago."""

from __future__ import annotations

import time
from datetime import UTC, datetime

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: float | None = None) -> float:
    """Epoch seconds for `text`; raises ValueError with a message a person understands."""
    value = text.strip()
    if not value:
        raise ValueError("empty time")
    if value[-1] in _UNITS and value[:-1].replace(".", "", 1).isdigit():
        return (now if now is not None else time.time()) - float(value[:-1]) * _UNITS[value[-1]]
    try:
        return float(value)
    except ValueError:
        pass
    candidate = value.replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        try:
            moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")
        except ValueError:
            raise ValueError(
                f"cannot read time {text[:80]!r}{'...' if len(text) > 80 else ''}: use epoch seconds, "
                "ISO 8601 (2026-11-26T10:00:00Z) or an age such as 15m, 2h, 1d"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_duration(text: str) -> float:
    """Seconds in `30`, `15m`, `2h`, `1d`; raises ValueError for anything else or a duration not above 0."""
    value = text.strip()
    factor = _UNITS.get(value[-1:], 1) if value else 1
    number = value[:-1] if value[-1:] in _UNITS else value
    try:
        seconds = float(number) * factor
    except ValueError:
        raise ValueError(f"cannot read duration {text[:40]!r}: use seconds or 15m, 2h, 1d") from None
    if not seconds > 0:
        raise ValueError("a duration must be above 0")
    return seconds
