"""Where the watch of one resource stands: its resourceVersion, what is known of its objects, its counters.

One object per resource, shared by the list, the watch loop and the reporter, so they agree on one picture.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from vigil.agent.modules.kubernetes.watch_normalize import Seen

log = logging.getLogger(__name__)


def state_key(resource: str) -> str:
    return f"k8s.watch:{resource}"


@dataclass
class WatchedKind:
    """One watched resource: where its watch stands and what is known of its objects (in memory)."""

    resource: str
    rv: str | None = None  # where the next watch starts; None: list first
    newest_created: str = ""  # newest creationTimestamp seen, saved to tell new objects after a restart
    snapshot: dict[str, Seen] | None = None  # uid -> Seen; None until listed (or resumed) in this process
    resumed: bool = False  # the rv came from saved state: the snapshot holds only what was seen since
    down_since: float | None = None  # when the watch last failed; None while it works
    unsaved: bool = False  # kind.rv moved on since the state was last stored
    saved_at: float = 0.0
    gap: str | None = None  # why the next list replaces a watch
    watcher: Any = None  # the kubernetes Watch of the request in progress
    response: Any = None  # its urllib3 response, whose socket interrupt() shuts down
    counters: dict[str, int] = field(default_factory=lambda: {
        "events": 0, "lists": 0, "relists": 0, "bookmarks": 0, "skipped_status_updates": 0, "malformed": 0,
        "errors": 0, "watch_requests": 0})
    connected: bool = False
    last_error: str | None = None

    @classmethod
    def resume(cls, resource: str, saved: Any) -> WatchedKind:
        """The kind as saved state left it, so a restart resumes the watch where it stopped."""
        kind = cls(resource)
        if isinstance(saved, dict) and isinstance(saved.get("rv"), str) and saved["rv"]:
            kind.rv, kind.resumed = saved["rv"], True
            created = saved.get("created")
            kind.newest_created = created if isinstance(created, str) else ""
        return kind

    def state(self, rv: str | None = None, created: str | None = None) -> dict[str, Any]:
        """The saved state once rv/created (default: the current ones) are stored."""
        return {state_key(self.resource): {"rv": rv or self.rv,
                                           "created": self.newest_created if created is None else created}}

    def unblock(self) -> None:
        """Make a read blocked on the watch's socket return now (urllib3 shutdown, else the client's own stop)."""
        watcher, response = self.watcher, self.response
        if watcher is not None:
            watcher.stop()
        if response is not None:
            try:
                response.shutdown()
            except Exception:  # already closed or released: nothing is blocked on it
                log.debug("shutting the watch connection down failed", exc_info=True)


def created_at(obj: dict[str, Any]) -> str:
    """The object's creationTimestamp ("" when missing): how objects created since a restart are told apart."""
    metadata = obj.get("metadata")
    value = metadata.get("creationTimestamp") if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else ""
