"""An HTTP endpoint in the node agent where pods POST their log lines (`POST /v1/logs`, JSON lines or text),
for workloads that log neither to stdout nor to syslog.

Each line becomes one event, as a collected log line does (`lines.line_event`: cut at max_line_bytes and
marked, invalid UTF-8 replaced and marked). A JSON object is kept under `data.json`; its `message` or `log`
text, when there is one, is the line the manager decodes and the rules read. The pod that sent it is named
by the `X-Vigil-Pod/-Namespace/-Container` headers or the line's own `kubernetes` object and placed under
`data.kubernetes`, as for CRI log files. The sender declares it: nothing checks it against the API.

Requests wait in a bounded queue; a writer thread stores them in batches through the sink. A request is
answered 200 once its lines are durable, 202 if that takes longer than ack_timeout_seconds (they are
still stored), and 503 with Retry-After, nothing kept, when the queue has no room for all of its lines or
they could not be stored: the sender retries the whole request, so a line is neither lost nor stored twice.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from typing import Any

from vigil.agent.modules.base import BatchSink
from vigil.agent.modules.logs.http_lines_server import PATH, LinesServer, Pending
from vigil.config_kubernetes import HttpLogsConfig
from vigil.errors import ListenError
from vigil.event import AgentRef, Event

log = logging.getLogger(__name__)

BATCH_EVENTS = 2000
TAKE_SECONDS = 0.2
DRAIN_SECONDS = 5.0


class HttpLinesReceiver:
    """The http_logs module."""

    name = "http_logs"

    def __init__(self, config: HttpLogsConfig, agent: AgentRef, sink: BatchSink) -> None:
        self.config = config
        self.agent = agent
        self.sink = sink
        self.port: int | None = None
        self.listening = False
        self.last_error: str | None = None
        self.counters = {"requests": 0, "lines": 0, "stored": 0, "truncated": 0, "invalid_bytes": 0,
                         "refused": 0, "busy": 0, "late": 0, "store_failed": 0, "connections_refused": 0}
        # Kept across runs: what a run could not store (requests already answered 202) the next one stores.
        self._queue: deque[Pending] = deque()
        self._queued = 0
        self._accepting = False
        self._cond = threading.Condition()

    def status(self) -> dict[str, Any]:
        with self._cond:
            return {"host": self.config.host, "port": self.port, "listening": self.listening, **self.counters,
                    "queued": self._queued, "queue_lines": self.config.queue_lines, "last_error": self.last_error}

    def interrupt(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def count(self, name: str, step: int = 1) -> None:
        with self._cond:
            self.counters[name] += step

    def run(self, stop: threading.Event) -> None:
        server = self._listen()
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="http-logs-server", daemon=True)
        thread.start()
        with self._cond:
            self._accepting = True
        self.listening, self.last_error = True, None
        log.info("http log receiver listening on %s port %s (POST %s)", self.config.host, self.port, PATH)
        failure: BaseException | None = None
        try:
            while not stop.is_set():
                self._store(self._take(stop))
        except Exception as exc:
            failure = exc
            self.last_error = f"storing lines failed: {exc}"
        finally:
            with self._cond:
                self._accepting = False
            server.shutdown()
            server.server_close()
            thread.join(5)
            self.listening = False
            if failure is None:
                self._drain()
            self._refuse_waiting()
        if failure is not None:
            raise failure

    def _listen(self) -> LinesServer:
        host = self.config.host
        try:
            server = LinesServer((host, self.config.port), self)
        except OSError as exc:
            raise ListenError(f"the http log receiver cannot listen on {host}:{self.config.port}: {exc}") from exc
        self.port = server.server_address[1]
        return server

    def offer(self, events: list[Event]) -> Pending | None:
        """Queues a request's events whole; None when there is no room for all of them (or no run)."""
        pending = Pending(events)
        with self._cond:
            if not self._accepting or self._queued + len(events) > self.config.queue_lines:
                self.counters["busy"] += 1
                return None
            self._queue.append(pending)
            self._queued += len(events)
            self._cond.notify_all()
        return pending

    def wait(self, pending: Pending) -> bool | None:
        """True once stored, False if refused, None if it takes too long (then stored later, unattended)."""
        pending.done.wait(self.config.ack_timeout_seconds)
        with self._cond:
            if pending.done.is_set():
                return pending.stored
            pending.abandoned = True
            self.counters["late"] += 1
            return None

    def _take(self, stop: threading.Event | None) -> list[Pending]:
        """Whole requests, up to BATCH_EVENTS events (at least one request)."""
        with self._cond:
            if not self._queue and (stop is None or not stop.is_set()):
                self._cond.wait(TAKE_SECONDS)
            batch: list[Pending] = []
            size = 0
            while self._queue and (not batch or size + len(self._queue[0].events) <= BATCH_EVENTS):
                pending = self._queue.popleft()
                batch.append(pending)
                size += len(pending.events)
            return batch

    def _store(self, batch: list[Pending]) -> None:
        if not batch:
            return
        events = [e for p in batch for e in p.events]
        try:
            self.sink(events, None)
        except Exception:
            with self._cond:
                self.counters["store_failed"] += len(events)
                # Unattended requests go back first in line for the next run; the others are told to retry.
                for pending in reversed(batch):
                    if pending.abandoned:
                        self._queue.appendleft(pending)
                    else:
                        self._queued -= len(pending.events)
                        pending.done.set()
            raise
        with self._cond:
            self._queued -= len(events)
            self.counters["stored"] += len(events)
            for pending in batch:
                pending.stored = True
                pending.done.set()

    def _drain(self) -> None:
        """At stop, what is queued gets DRAIN_SECONDS to be stored."""
        deadline = time.monotonic() + DRAIN_SECONDS
        with contextlib.suppress(Exception):
            while self._queue and time.monotonic() < deadline:
                self._store(self._take(None))

    def _refuse_waiting(self) -> None:
        """Requests still waiting are answered 503 and dropped from the queue: their senders send them again."""
        with self._cond:
            kept: deque[Pending] = deque()
            for pending in self._queue:
                if pending.abandoned:
                    kept.append(pending)
                else:
                    self._queued -= len(pending.events)
                    pending.done.set()
            self._queue = kept
            if kept:
                log.warning("http log receiver: %d lines already acknowledged (202) are still queued at stop; "
                            "a restart of the module stores them, the end of the agent loses them", self._queued)
