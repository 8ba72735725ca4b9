"""Rate-limited health events, so a flood of bad requests or lines becomes a few alerts with counts
rather than one alert each. Shared by the audit webhook and the audit log file backend."""

from __future__ import annotations

import threading
import time
from typing import Any

from vigil.agent.modules.kubernetes.audit_normalize import problem_event
from vigil.event import AgentRef, Event

REPORT_SECONDS = 10.0  # problems of one kind become at most one health event this often


class ProblemThrottle:
    """One health event per kind at first, then at most one per REPORT_SECONDS with the count since."""

    def __init__(self, module: str, agent: AgentRef | None, seconds: float = REPORT_SECONDS) -> None:
        self.module = module
        self.agent = agent
        self.seconds = seconds
        self._last: dict[str, float] = {}
        self._held: dict[str, tuple[int, str, str, dict[str, Any]]] = {}  # kind -> count, location, message, details
        self._lock = threading.Lock()

    def note(self, kind: str, location: str, message: str, count: int = 1,
             details: dict[str, Any] | None = None) -> Event | None:
        with self._lock:
            held = self._held.pop(kind, None)
            total = count + (held[0] if held else 0)
            if time.monotonic() - self._last.get(kind, -1e9) < self.seconds:
                self._held[kind] = (total, location, message, details or {})
                return None
            self._last[kind] = time.monotonic()
        return self._event(kind, total, location, message, details or {})

    def due(self) -> list[Event]:
        """Held counts whose quiet time is over."""
        now = time.monotonic()
        out = []
        with self._lock:
            for kind in [k for k in self._held if now - self._last.get(k, 0) >= self.seconds]:
                count, location, message, details = self._held.pop(kind)
                self._last[kind] = now
                out.append(self._event(kind, count, location, message, details))
        return out

    def _event(self, kind: str, count: int, location: str, message: str, details: dict[str, Any]) -> Event:
        text = message if count == 1 else f"{message} ({count} times in {self.seconds:.0f} s)"
        return problem_event(self.module, location, kind, text, agent=self.agent,
                             details={**details, "count": count})
