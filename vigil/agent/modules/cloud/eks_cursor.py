"""Where an EKS audit log stream was left, so a restart neither misses nor repeats an event.

CloudWatch Logs' forward token is the exact resume point, but it can expire or be refused
(InvalidParameterException). The cursor therefore also keeps the newest event time handled and the
digests of the events at exactly that time: reading again from that time, the events already handled
at the boundary are recognised and skipped (the `Checkpoint` of the Docker stream, in milliseconds).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from vigil.agent.modules.docker.checkpoint import Checkpoint

NANOS_PER_MS = 1_000_000


def stream_key(cluster: str, stream: str) -> str:
    """The state key of one stream's cursor."""
    return f"eks.{cluster}.stream:{stream}"


def started_key(cluster: str) -> str:
    """The state key holding when the module first ran (ms), the start of `start_at: end`."""
    return f"eks.{cluster}.started"


def event_digest(timestamp_ms: int, message: str) -> str:
    """Names one log event; CloudWatch event ids are not usable (an emulator numbers them per stream)."""
    return hashlib.sha256(f"{timestamp_ms}\n{message}".encode("utf-8", "surrogatepass")).hexdigest()[:24]


@dataclass
class StreamCursor:
    """A stream's forward token plus the time/digest fallback; `token is None` means: resume by time."""

    token: str | None = None
    checkpoint: Checkpoint = field(default_factory=Checkpoint)

    @property
    def time_ms(self) -> int:
        """The newest event time handled (0: none yet)."""
        return self.checkpoint.time_nano // NANOS_PER_MS

    def is_new(self, timestamp_ms: int, digest: str) -> bool:
        return self.checkpoint.is_new(timestamp_ms * NANOS_PER_MS, digest)

    def advance(self, timestamp_ms: int, digest: str) -> None:
        self.checkpoint.advance(timestamp_ms * NANOS_PER_MS, digest)

    def copy(self) -> StreamCursor:
        return StreamCursor(self.token, Checkpoint(self.checkpoint.time_nano, set(self.checkpoint.seen)))

    def stale_token(self) -> None:
        """The token was refused: read again from the checkpoint's time, skipping what it saw."""
        self.token = None

    def to_state(self) -> dict[str, Any]:
        return {"token": self.token, "cursor": self.checkpoint.to_state()}

    @classmethod
    def from_state(cls, state: Any) -> StreamCursor | None:
        """None when nothing (or nothing usable) was saved: the stream is then new to this module."""
        if not isinstance(state, dict):
            return None
        token = state.get("token")
        return cls(token if isinstance(token, str) and token else None, Checkpoint.from_state(state.get("cursor")))
