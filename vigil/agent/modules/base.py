"""What every collection module looks like to the agent runtime."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from vigil.event import Event

# Called for each event; returns once the event (and the module's state update) is durable.
Sink = Callable[[Event, dict[str, Any] | None], Any]


class Module(Protocol):
    name: str

    def run(self, stop: threading.Event) -> None:
        """Collect until `stop` is set; return normally then. Raising means: restart me."""

    def interrupt(self) -> None:
        """Unblock `run` (close streams) after `stop` was set."""

    def status(self) -> dict[str, Any]:
        """Counters and connection state for `vigil status` and /health."""

# Called with a run of events and the module's state after the last of them; returns once all of them
# (and the state) are durable together, so a restart neither repeats nor misses one.
BatchSink = Callable[[list[Event], dict[str, Any] | None], Any]

# Reads a module's saved state by key (None when there is none).
StateReader = Callable[[str], Any]
