"""What the watch hands the sink: events with the saved state that goes with them, and events about itself.

Every resource has its own thread but all share one sink, which is not assumed thread-safe: every write
goes through one `WatchReporter`, under one lock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from vigil.agent.modules.base import BatchSink
from vigil.agent.modules.kubernetes.audit_normalize import problem_event
from vigil.agent.modules.kubernetes.watch_kind import WatchedKind
from vigil.event import AgentRef, Event

log = logging.getLogger(__name__)

MODULE = "k8s_watch"
STATE_SECONDS = 5.0  # how often a version moved on by bookmarks and status updates alone is saved


class WatchReporter:
    """The one way from the watch threads to the sink, and the health events (gap, reconnect, malformed)."""

    def __init__(self, cluster: str, agent: AgentRef, sink: BatchSink) -> None:
        self.cluster = cluster
        self.agent = agent
        self.location = f"{MODULE}:{cluster}"
        self.server: str | None = None  # the API server, once the client is configured
        self._sink = sink
        self._sink_lock = threading.Lock()

    def store(self, events: list[Event], state: dict[str, Any] | None) -> None:
        with self._sink_lock:  # one thread per resource; the sink is not assumed thread-safe
            self._sink(events, state)

    def moved(self, kind: WatchedKind, rv: str, created: str) -> None:
        """The version moved on without an event (bookmark, status update): saved every few seconds, not
        each time (a restart then replays a little and skips it again)."""
        kind.rv, kind.newest_created, kind.unsaved = rv, created, True
        if time.monotonic() - kind.saved_at >= STATE_SECONDS:
            self.save(kind)

    def save(self, kind: WatchedKind) -> None:
        if kind.unsaved and kind.rv is not None:
            self.store([], kind.state())
            kind.unsaved, kind.saved_at = False, time.monotonic()

    def malformed(self, kind: WatchedKind, event: Any, message: str = "") -> None:
        kind.counters["malformed"] += 1
        excerpt = json.dumps(event, default=str)[:512] if event is not None else "(a line that is not JSON)"
        message = message or f"a watch event for {kind.resource} that is not a Kubernetes watch event was skipped"
        log.warning("Kubernetes watch: %s: %s", message, excerpt)
        self.store([problem_event(MODULE, self.location, "malformed_input", message, agent=self.agent,
                                  details={"resource": kind.resource, "excerpt": excerpt})], None)

    def gap_event(self, kind: WatchedKind, reason: str, rv: str, compared: bool, changes: int, since: str) -> Event:
        """The `possible_gap` event (rule 200006): the watch was replaced by a list, and what that could tell."""
        if compared:
            what = f"{changes} changes found by comparing with the objects known before were reported"
        else:
            what = (f"Vigil restarted since; objects created since {since or 'then'} were "
                    "reported as added, but changes to and deletions of older objects cannot be known")
        message = f"{reason}; {kind.resource} listed again: {what}"
        log.warning("Kubernetes watch: %s", message)
        return problem_event(MODULE, self.location, "possible_gap", message, agent=self.agent,
                             details={"resource": kind.resource, "cluster": self.cluster,
                                      "resource_version": rv, "changes": changes})

    def answered(self, kind: WatchedKind) -> None:
        """The API server answered: after a failure, say the watch is back (rule 200002)."""
        if kind.down_since is None:
            return
        outage, kind.down_since = time.monotonic() - kind.down_since, None
        log.info("Kubernetes watch of %s: reconnected to %s after %.1f s", kind.resource, self.server, outage)
        self.store([problem_event(MODULE, self.location, "reconnected", "reconnected", agent=self.agent,
                                  details={"target": f"{self.server} ({kind.resource})",
                                           "outage_seconds": round(outage, 1)})], None)
