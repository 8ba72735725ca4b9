"""Event in, alerts out: decode, match, fold, then write alerts.json and the store (DESIGN §6.1)."""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from vigil.alert import encode_alert, wazuh_timestamp
from vigil.errors import EventError
from vigil.event import Event
from vigil.manager.analysis.analyzer import Analyzer
from vigil.manager.analysis.folding import Folder
from vigil.manager.outputs.alerts_file import AlertsFile
from vigil.manager.outputs.store import Columns, Store, alert_columns
from vigil.manager.outputs.writer import LocalOutputs, Outputs, Ticket

log = logging.getLogger(__name__)

DEFAULT_FOLD_IGNORE = (
    "docker.time", "docker.timeNano", "docker.Actor.Attributes.execID", "container.inspected_at",
    # Kubernetes audit events: what differs between two otherwise identical requests.
    "k8s.auditID", "k8s.stageTimestamp", "k8s.requestReceivedTimestamp", "k8s.timestamp", "k8s.metadata",
    "aws.event_id", "aws.ingestion_time", "gcp.insertId", "gcp.receiveTimestamp",
)


@dataclass
class Stats:
    events: int = 0
    alerts: int = 0
    folded: int = 0
    below_threshold: int = 0
    decode_errors: int = 0
    analysis_errors: int = 0
    by_module: Counter[str] = field(default_factory=Counter)
    by_level: Counter[int] = field(default_factory=Counter)


@dataclass(slots=True)
class _Batch:
    """Alerts on their way to the outputs: as stored (columns and JSON), and as objects if `keep`."""

    keep: bool
    columns: list[Columns] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)

    def add(self, alerts: list[dict[str, Any]]) -> None:
        for alert in alerts:
            self.columns.append(alert_columns(alert))
            self.bodies.append(encode_alert(alert))
            if self.keep:
                self.kept.append(alert)


def _analysis_failure(event: Event, exc: Exception) -> Event:
    """An internal event standing for one that analysis could not handle, so it is seen, not lost."""
    return Event(
        module="vigil", location=event.location, timestamp=event.timestamp, decoder="vigil", agent=event.agent,
        data={"vigil": {"module": event.module, "kind": "analysis_error", "error": f"{type(exc).__name__}: {exc}",
                        "event_id": event.id}},
        raw=str(event.data)[:512] if event.raw is None else event.raw[:512],
    )


class Pipeline:
    """Serialises analysis and output so alerts and checkpoints are stored in event order.

    Analysis and the hand-over to the outputs happen under one lock, in order; waiting for the write
    to be durable happens outside it, so with a writer process the next batch is analysed meanwhile.
    """

    def __init__(
        self, analyzer: Analyzer, folder: Folder, store: Store | None, alerts_file: AlertsFile | None,
        clock: Callable[[], float] = time.time, outputs: Outputs | None = None,
    ) -> None:
        self.analyzer = analyzer
        self.folder = folder
        self.outputs: Outputs = outputs or LocalOutputs(store, alerts_file)
        self.clock = clock
        self.stats = Stats()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    def on_alert(self, listener: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.append(listener)

    def process(self, event: Event, state: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Analyse one event and make its alerts (and `state`, e.g. a checkpoint) durable together."""
        with self._lock:
            batch = _Batch(keep=True)
            batch.add(self._analyse(event, self.clock()))
            ticket = self._submit(batch, state)
        return self._finish(ticket, batch.kept)

    def process_batch(self, events: Iterable[Event], state: dict[str, Any] | None = None) -> int:
        """Analyse a batch from an agent and store its alerts and `state` (how far the agent got) in one
        transaction, so a batch is either wholly stored or replayed whole. Returns the alerts stored.

        Each alert is serialised as soon as it is made and then let go (unless a listener wants it),
        so the next event's objects reuse memory still in the CPU's cache: serialising the whole
        batch afterwards, the same work took half as long again.
        """
        with self._lock:
            now = self.clock()
            batch = _Batch(keep=bool(self._listeners))
            for event in events:
                batch.add(self._analyse(event, now))
            ticket = self._submit(batch, state)
        self._finish(ticket, batch.kept)
        return len(batch.bodies)

    def _analyse(self, event: Event, now: float) -> list[dict[str, Any]]:
        self.stats.events += 1
        self.stats.by_module[event.module] += 1
        try:
            analysed = self.analyzer.analyse(event)
        except EventError as exc:
            self.stats.decode_errors += 1
            log.warning("event from %s could not be decoded: %s", event.location, exc)
            analysed = None
        except Exception as exc:  # a fault in analysis must not block the stream behind this event
            self.stats.analysis_errors += 1
            log.exception("analysis failed for an event from %s", event.location)
            analysed = self.analyzer.analyse(_analysis_failure(event, exc))
        out: list[dict[str, Any]] = []
        closed: list[Any] = []
        if analysed is not None and analysed.alert is not None:
            rule = analysed.match.rule
            if rule is not None and "no_fold" in rule.options:
                emit, closed = True, self.folder.expire(now)
            else:
                emit, closed = self.folder.admit(analysed.alert, now)
            if emit:
                out.append(analysed.alert)
            else:
                self.stats.folded += 1
        elif analysed is not None and analysed.match.rule is not None:
            self.stats.below_threshold += 1
        out.extend(self._summaries(closed))
        return out

    def tick(self) -> list[dict[str, Any]]:
        """Close fold windows that have ended; called about once a second."""
        return self._store_summaries(lambda: self.folder.expire(self.clock()))

    def drain(self) -> list[dict[str, Any]]:
        return self._store_summaries(self.folder.drain)

    def _store_summaries(self, close: Callable[[], list[Any]]) -> list[dict[str, Any]]:
        """Store the follow-ups of the fold windows `close` ends (called with the lock held)."""
        with self._lock:
            batch = _Batch(keep=True)
            batch.add(self._summaries(close()))
            ticket = self._submit(batch, None)
        return self._finish(ticket, batch.kept)

    def _summaries(self, closed: list[Any]) -> list[dict[str, Any]]:
        out = []
        for first, fold in closed:
            summary = copy.deepcopy(first)
            summary["id"] = self.analyzer.ids.next()
            summary["timestamp"] = wazuh_timestamp(fold.last)
            summary["rule"]["firedtimes"] = fold.count
            summary["vigil"] = {
                "fold": {
                    "first_alert": first["id"], "occurrences": fold.count,
                    "first_seen": wazuh_timestamp(fold.started), "last_seen": wazuh_timestamp(fold.last),
                }
            }
            out.append(summary)
        return out

    def _submit(self, batch: _Batch, state: dict[str, Any] | None) -> Ticket | None:
        """Hand alerts and state to the outputs; the lock is held, so they are stored in this order."""
        for columns in batch.columns:
            self.stats.alerts += 1
            self.stats.by_level[columns[2]] += 1
        if not batch.bodies and not state:
            return None
        return self.outputs.submit(batch.columns, batch.bodies, state)

    def _finish(self, ticket: Ticket | None, alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Wait until durable (raises WriterError if not), then tell the listeners."""
        if ticket is not None:
            ticket.wait()
        for alert in alerts:
            for listener in self._listeners:
                listener(alert)
        return alerts
