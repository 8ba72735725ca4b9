"""The audit log file backend: kube-apiserver's `--audit-log-path` (JSON lines), followed through
lumberjack rotation (`audit-<time>.log`) and restarts with the log collector's FileTail.

Each poll's events go to the sink together with the file's new offset, so a restart neither repeats
nor misses a line. A bad line is counted and reported (malformed_input, 200001) and a line longer than
`max_line_bytes` is dropped (events_dropped, 200003), at most one report per kind every few seconds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from vigil.agent.modules.base import BatchSink, StateReader
from vigil.agent.modules.kubernetes.audit_normalize import audit_event
from vigil.agent.modules.kubernetes.audit_payload import (
    AuditDedupe,
    AuditPayloadError,
    as_sent,
    parse_item,
    split_payload,
)
from vigil.agent.modules.kubernetes.problem_throttle import ProblemThrottle
from vigil.agent.modules.logs.file_tail import FileTail, TailState
from vigil.config_kubernetes import AuditFileConfig
from vigil.event import AgentRef, Event

log = logging.getLogger(__name__)

NAME = "k8s_audit_file"
STARTED_KEY = "k8s.audit_file.started"
BATCH_BYTES = 256 * 1024
POLL_SECONDS = 0.5


def state_key(path: str) -> str:
    return f"k8s.audit_file:{path}"


@dataclass
class _Source:
    config: AuditFileConfig
    path: str
    tail: FileTail
    saved: list[dict[str, Any]] | None = None


class AuditFileModule:
    name = NAME

    def __init__(self, files: list[AuditFileConfig], cluster: str, dedupe_entries: int, agent: AgentRef,
                 sink: BatchSink, read_state: StateReader, poll_seconds: float = POLL_SECONDS) -> None:
        self.files = files
        self.cluster = cluster
        self.agent = agent
        self.sink = sink
        self.read_state = read_state
        self.poll_seconds = poll_seconds
        self.dedupe = AuditDedupe(dedupe_entries)
        self.problems = ProblemThrottle(NAME, agent)
        self.sources: list[_Source] = []
        self.counters = {"lines": 0, "events": 0, "duplicates": 0, "malformed": 0, "cut": 0, "items_dropped": 0}

    def status(self) -> dict[str, Any]:
        return {"files": [s.path for s in self.sources], **self.counters,
                "rotations": sum(s.tail.rotations for s in self.sources),
                "truncations": sum(s.tail.truncations for s in self.sources)}

    def interrupt(self) -> None:
        """Nothing blocks for long: `run` sees its stop event at the next poll."""

    def run(self, stop: threading.Event) -> None:
        first_start = self.read_state(STARTED_KEY) is None
        if first_start:
            self.sink([], {STARTED_KEY: time.time()})
        self._close()
        for config in self.files:
            path = str(config.path)
            saved = TailState.list_from_state(self.read_state(state_key(path)))
            from_end = first_start and config.start_at == "end"
            self.sources.append(_Source(config, path, FileTail(path, config.max_line_bytes, saved, from_end)))
            log.info("audit file: following %s%s", path, "" if os.path.exists(path) else " (once it exists)")
            if os.path.exists(path) and not os.access(path, os.R_OK):
                log.warning("audit file: %s cannot be read by this user; it is read once it can be", path)
        try:
            while not stop.is_set():
                busy = False
                for source in self.sources:
                    busy |= self._poll(source)
                if (held := self.problems.due()):
                    self.sink(held, None)
                if not busy:
                    stop.wait(self.poll_seconds)
        finally:
            self._close()

    def _close(self) -> None:
        for source in self.sources:
            source.tail.close()
        self.sources.clear()

    def _poll(self, source: _Source) -> bool:
        """Hand one poll's events on with the new offset; True when more may be waiting."""
        lines = source.tail.poll(BATCH_BYTES)
        state = source.tail.state()
        if not lines:
            if state is not None and state != source.saved:
                self.sink([], {state_key(source.path): state})
                source.saved = state
            return False
        events = self._events(source, lines)
        self.sink(events, {state_key(source.path): state} if state is not None else None)
        source.saved = state
        return sum(len(x.data) for x in lines) >= BATCH_BYTES // 2

    def _events(self, source: _Source, lines: list[Any]) -> list[Event]:
        limit = source.config.max_line_bytes
        cluster = source.config.cluster or self.cluster
        events: list[Event] = []
        bad, cut, dropped = 0, 0, 0
        first_bad = first_dropped = ""
        for line in lines:
            self.counters["lines"] += 1
            if line.cut:
                cut += 1
                continue
            if not line.data.strip():
                continue
            try:
                items = split_payload(line.data, max_events=10_000)
            except AuditPayloadError as exc:
                bad += 1
                first_bad = first_bad or f"{exc} (at byte {line.start})"
                continue
            for index, item in enumerate(items):
                obj = parse_item(item, index, limit)
                if isinstance(obj, str):
                    dropped += 1
                    first_dropped = first_dropped or obj
                elif not self.dedupe.is_new(obj):
                    self.counters["duplicates"] += 1
                else:
                    events.append(audit_event(obj, module="kubernetes", source="file", cluster=cluster,
                                              location=source.path, agent=self.agent, sent=as_sent(item)))
        self.counters["events"] += len(events)
        self.counters["malformed"] += bad
        self.counters["cut"] += cut
        self.counters["items_dropped"] += dropped
        notes = [("malformed_input", bad, f"bad audit log line in {source.path}: {first_bad}"),
                 ("events_dropped", cut, f"audit log lines in {source.path} longer than {limit} bytes dropped"),
                 ("events_dropped", dropped, f"audit events in {source.path} dropped: {first_dropped}")]
        for kind, count, message in notes:
            if count and (event := self.problems.note(kind, source.path, message, count=count)) is not None:
                events.append(event)
        return events
