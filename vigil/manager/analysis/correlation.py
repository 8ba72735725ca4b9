"""`frequency`/`timeframe` correlation: counts matches per key in a sliding window, bounded in memory."""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Final

from vigil.manager.analysis.fields import Fields, as_text
from vigil.manager.analysis.rules import Rule

MAX_KEYS: Final = 100_000


class Correlator:
    """Remembers recent match times for each (rule, same_fields values) key.

    Keys are evicted least-recently-used past MAX_KEYS so a flood of distinct keys cannot
    exhaust memory; evictions are counted.
    """

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._windows: OrderedDict[tuple[int, tuple[str, ...]], deque[float]] = OrderedDict()
        self._last: OrderedDict[tuple[int, tuple[str, ...]], float] = OrderedDict()  # for rules that follow
        self.max_keys = max_keys
        self.evicted = 0

    def remember(self, rule: Rule, fields: Fields, timestamp: float) -> None:
        """An event matched what `rule` follows: remember when, under `rule`'s same_fields values."""
        key = _present_key(rule, fields)
        if key is None:
            return
        self._last[key] = timestamp
        self._last.move_to_end(key)
        if len(self._last) > self.max_keys:
            self._last.popitem(last=False)
            self.evicted += 1

    def recall(self, rule: Rule, fields: Fields, timestamp: float) -> bool:
        """Whether what `rule` follows matched within its timeframe before this event; forgotten once
        used, so one run of failures gives one alert for the success after it."""
        assert rule.timeframe is not None
        key = _present_key(rule, fields)
        when = self._last.get(key) if key is not None else None
        if key is None or when is None or timestamp - when > rule.timeframe:
            return False
        del self._last[key]
        return True

    def observe(self, rule: Rule, fields: Fields, timestamp: float) -> tuple[bool, int]:
        """Count one match; returns (threshold reached, count in window). Reaching it resets the key."""
        assert rule.frequency is not None and rule.timeframe is not None
        key = (rule.id, tuple(_key_part(fields.get(p)) for p in rule.same_fields))
        window = self._windows.get(key)
        if window is None:
            window = deque()
            self._windows[key] = window
            if len(self._windows) > self.max_keys:
                self._windows.popitem(last=False)
                self.evicted += 1
        else:
            self._windows.move_to_end(key)
        window.append(timestamp)
        horizon = timestamp - rule.timeframe
        while window and window[0] < horizon:
            window.popleft()
        count = len(window)
        if count >= rule.frequency:
            window.clear()
            return True, count
        return False, count


def _present_key(rule: Rule, fields: Fields) -> tuple[int, tuple[str, ...]] | None:
    """The key of an event for a rule that follows another; None when one of its same_fields is missing
    (two events without a source address are not from the same one)."""
    values = [fields.get(path) for path in rule.same_fields]
    if any(v is None for v in values):
        return None
    return rule.id, tuple(_key_part(v) for v in values)


def _key_part(value: object) -> str:
    if isinstance(value, list):
        return ",".join(as_text(v) for v in value)
    return "" if value is None else as_text(value)
