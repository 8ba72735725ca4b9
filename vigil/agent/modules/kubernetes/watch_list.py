"""Listing one resource: on the first start a baseline, after a gap (410) the differences as events.

Comparing the new list with what was known turns changes made while the watch was down into
ADDED/MODIFIED/DELETED events, so a gap loses nothing that can still be known; a `possible_gap` event
says it happened and what could not be known.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from vigil.agent.modules.kubernetes.watch_client import list_all
from vigil.agent.modules.kubernetes.watch_kind import WatchedKind, created_at
from vigil.agent.modules.kubernetes.watch_normalize import Seen, identity, watch_event
from vigil.agent.modules.kubernetes.watch_reporter import WatchReporter
from vigil.config_kubernetes import WatchConfig
from vigil.event import AgentRef, Event

BATCH = 500  # events per sink call while listing
# Kinds whose existing objects are reported at the first start: the ones posture rules look at.
_POSTURE_RESOURCES = frozenset({"pods", "deployments", "daemonsets", "statefulsets", "replicasets", "jobs",
                                "cronjobs", "roles", "rolebindings", "clusterroles", "clusterrolebindings"})


def list_kind(api: Any, kind: WatchedKind, stop: threading.Event, config: WatchConfig,
              reporter: WatchReporter) -> None:
    """List every object; on the first start a baseline, after a gap the differences as events."""
    items, rv = list_all(api, kind.resource, config)
    reporter.answered(kind)
    kind.counters["lists"] += 1
    gap = kind.gap
    previous = kind.snapshot if not kind.resumed else None  # a complete picture to compare with, or none
    snapshot: dict[str, Seen] = {}
    events: list[Event] = []
    newest = newest_before = kind.newest_created
    report_existing = config.report_existing and kind.resource in _POSTURE_RESOURCES
    for obj in items:
        uid, _version = identity(obj)
        created = created_at(obj)
        before = previous.get(uid) if previous is not None else None
        if previous is not None:
            kind_of_change = "ADDED" if before is None else "MODIFIED"
        elif kind.resumed:  # after a restart: only what was created since is known to be new
            seen_since = kind.snapshot is not None and uid in kind.snapshot
            kind_of_change = "ADDED" if created >= kind.newest_created and not seen_since else ""
        else:
            kind_of_change = "EXISTING" if report_existing else ""
        event, seen = watch_event(kind.resource, kind_of_change or "EXISTING", obj, cluster=reporter.cluster,
                                  previous=before, relisted=gap is not None, agent=reporter.agent, when=time.time())
        snapshot[uid] = seen
        newest = max(newest, created)
        if kind_of_change == "MODIFIED" and before is not None and before.content == seen.content:
            continue
        if kind_of_change:
            events.append(event)
    for uid, seen in (previous or {}).items():
        if uid not in snapshot:
            events.append(_deleted(kind.resource, uid, seen, reporter.cluster, reporter.agent))
    if gap is not None:
        events.append(reporter.gap_event(kind, gap, rv, previous is not None, len(events), newest_before))
    for start in range(0, max(len(events), 1), BATCH):
        if stop.is_set():
            return
        chunk = events[start:start + BATCH]
        reporter.store(chunk, kind.state(rv, newest) if start + BATCH >= len(events) else None)
    # only now that all is stored: a failure above lists again and repeats rather than loses
    kind.rv, kind.snapshot, kind.newest_created, kind.resumed, kind.gap = rv, snapshot, newest, False, None
    kind.unsaved, kind.saved_at = False, time.monotonic()
    kind.counters["events"] += len(events)
    kind.counters["relists"] += gap is not None


def _deleted(resource: str, uid: str, seen: Seen, cluster: str, agent: AgentRef) -> Event:
    """A DELETED event for an object that vanished during a gap; only its identity is still known."""
    obj = {"metadata": {"uid": uid, "resourceVersion": seen.resource_version, "name": seen.name,
                        "namespace": seen.namespace}}
    event, _ = watch_event(resource, "DELETED", obj, cluster=cluster, previous=seen, relisted=True, agent=agent,
                           when=time.time())
    return event
