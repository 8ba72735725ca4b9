"""The event envelope: the one record every module emits and the manager consumes (DESIGN §2.2)."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from vigil.errors import EventError

ENVELOPE_VERSION = 1

# Event ids: a random prefix per process and a counter (`5f0c9a27e1b3d4a6-42`), unique without a
# syscall per event; built from C-level iterators so that making one costs no Python call.
_NEW_EVENT_IDS = map(f"{os.urandom(8).hex()}-".__add__, map(str, itertools.count()))


@dataclass(frozen=True, slots=True)
class AgentRef:
    """Who collected the event; copied into every alert as `agent{id, name, ip}`."""

    id: str = "000"
    name: str = "vigil"
    ip: str | None = None
    _as_dict: dict[str, str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        out = {"id": self.id, "name": self.name}
        if self.ip:
            out["ip"] = self.ip
        object.__setattr__(self, "_as_dict", out)

    def to_dict(self) -> dict[str, str]:
        """The alert's `agent` object; shared between alerts of one agent, so never mutate it."""
        return self._as_dict


@dataclass(slots=True)
class Event:
    """A collected event, before analysis.

    `data` holds the source's structured fields (for Docker: `{"docker": <event as sent>, ...}`);
    `raw` holds the original line for text sources. `decoder` names the decoder that applies,
    so structured sources need no guessing.
    """

    module: str
    location: str
    timestamp: float
    data: dict[str, Any]
    decoder: str
    agent: AgentRef = field(default_factory=AgentRef)
    raw: str | None = None
    id: str = field(default_factory=_NEW_EVENT_IDS.__next__)
    v: int = ENVELOPE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "id": self.id,
            "agent": self.agent.to_dict(),
            "module": self.module,
            "location": self.location,
            "timestamp": self.timestamp,
            "decoder": self.decoder,
            "data": self.data,
            "raw": self.raw,
        }

    @classmethod
    def from_dict(cls, obj: Any, agent: AgentRef | None = None) -> Event:
        """Rebuild an envelope sent by an agent; newer minor fields are ignored, bad ones refused.

        `agent`, when given, replaces the envelope's own (the manager knows the sender from its
        certificate), and saves building one per event."""
        if not isinstance(obj, dict):
            raise EventError(f"event envelope must be an object, got {type(obj).__name__}")
        version = obj.get("v", ENVELOPE_VERSION)
        if not isinstance(version, int) or version < 1 or version > ENVELOPE_VERSION:
            raise EventError(f"unsupported envelope version {version!r} (this manager reads 1..{ENVELOPE_VERSION})")
        try:
            if agent is None:
                sent = obj.get("agent") or {}
                agent = AgentRef(str(sent.get("id", "000")), str(sent.get("name", "vigil")), sent.get("ip"))
            data = obj.get("data") or {}
            raw = obj.get("raw")
            if not isinstance(data, dict) or not (raw is None or isinstance(raw, str)):
                raise TypeError("data must be an object and raw a string or null")
            return cls(
                v=version, id=str(obj["id"]), agent=agent, module=str(obj["module"]), location=str(obj["location"]),
                timestamp=float(obj["timestamp"]), decoder=str(obj["decoder"]), data=data, raw=raw,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EventError(f"malformed event envelope: {exc!r}") from exc
