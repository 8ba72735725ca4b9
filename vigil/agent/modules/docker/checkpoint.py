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
        moved = Checkpoint(self.time_nano, set(self.seen))
        moved.advance(time_nano, digest)
        return moved

    def since(self) -> str | None:
        """The `since` argument for the engine: seconds with nanoseconds, or None when nothing was handled yet."""
        return since_text(self.time_nano) if self.time_nano > 0 else None

    def to_state(self) -> dict[str, Any]:
        return {"time_nano": self.time_nano, "seen": sorted(self.seen)}

    @classmethod
    def from_state(cls, state: Any) -> Checkpoint:
        if not isinstance(state, dict):
            return cls()
        try:
            return cls(int(state.get("time_nano", 0)), {str(s) for s in state.get("seen", [])})
        except (TypeError, ValueError):
            return cls()


def since_text(time_nano: int) -> str:
    """Nanoseconds since the epoch as the engine's `since` takes them: `1700000000.000000001`."""
    return f"{time_nano // 1_000_000_000}.{time_nano % 1_000_000_000:09d}"
