"""Where the Docker event stream was left, so a resumed stream neither misses nor repeats events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Checkpoint:
    """The newest event time handled, and the digests of the events handled at exactly that time.

    The engine's `since` filter is inclusive and several events can share a nanosecond, so the
    digests tell which of the events at the boundary were already handled.
    """

    time_nano: int = 0
    seen: set[str] = field(default_factory=set)
    # When the module first started, stored before any event: until one is handled, the stream is
    # followed from there (after a restart too). It filters nothing out by itself.
    start_nano: int = 0

    def is_new(self, time_nano: int, digest: str) -> bool:
        if time_nano > self.time_nano:
            return True
        return time_nano == self.time_nano and digest not in self.seen

    def advance(self, time_nano: int, digest: str) -> None:
        if time_nano > self.time_nano:
            self.time_nano = time_nano
            self.seen = {digest}
        elif time_nano == self.time_nano:
            self.seen.add(digest)

    def advanced(self, time_nano: int, digest: str) -> Checkpoint:
        """A copy moved past one event, to be stored with its alerts before this one moves."""
        moved = Checkpoint(self.time_nano, set(self.seen), self.start_nano)
        moved.advance(time_nano, digest)
        return moved

    def since(self) -> str | None:
        """The `since` argument for the engine: seconds with nanoseconds, or None with neither an event nor a start."""
        if self.time_nano > 0:
            return since_text(self.time_nano)
        return since_text(self.start_nano) if self.start_nano > 0 else None

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"time_nano": self.time_nano, "seen": sorted(self.seen)}
        if self.start_nano:
            state["start_nano"] = self.start_nano
        return state

    @classmethod
    def from_state(cls, state: Any) -> Checkpoint:
        if not isinstance(state, dict):
            return cls()
        try:
            return cls(int(state.get("time_nano", 0)), {str(s) for s in state.get("seen", [])},
                       int(state.get("start_nano", 0)))
        except (TypeError, ValueError):
            return cls()


def since_text(time_nano: int) -> str:
    """Nanoseconds since the epoch as the engine's `since` takes them: `1700000000.000000001`."""
    return f"{time_nano // 1_000_000_000}.{time_nano % 1_000_000_000:09d}"
