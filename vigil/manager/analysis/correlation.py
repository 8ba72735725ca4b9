"""`frequency`/`timeframe` correlation: counts matches per key in a sliding window, bounded in memory."""

from __future__ import annotations

from collections import OrderedDict, deque

from vigil.manager.analysis.fields import Fields, as_text
from vigil.manager.analysis.rules import Rule

MAX_KEYS = 100_000


class Correlator:
    """Remembers recent match times for each (rule, same_fields values) key.

    Keys are evicted least-recently-used past MAX_KEYS so a flood of distinct keys cannot
    exhaust memory; evictions are counted.
    """

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._windows: OrderedDict[tuple[int, tuple[str, ...]], deque[float]] = OrderedDict()
        self.max_keys = max_keys
        self.evicted = 0

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


def _key_part(value: object) -> str:
    if isinstance(value, list):
        return ",".join(as_text(v) for v in value)
    return "" if value is None else as_text(value)
