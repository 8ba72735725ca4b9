"""The audit webhook: an HTTPS endpoint for kube-apiserver's `--audit-webhook-config-file`.

Its own listener, not the API (docs/kubernetes.md): the API has a 1 MiB body limit and a rate limit,
and uvicorn does not show the app the peer's certificate. Every limit is checked before the body is
read (webhook_http). The API server retries a batch it got no 2xx for, so a request is answered 200
only once its events are stored (handed to the sink by the writer thread); when the queue is full, or
storing is slower than `ack_timeout_seconds`, it is answered 503 with Retry-After and the retry's
repeats are dropped by the (auditID, stage) dedupe.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigil.agent.modules.base import BatchSink
from vigil.agent.modules.kubernetes.audit_normalize import audit_event
from vigil.agent.modules.kubernetes.audit_payload import (
    AuditDedupe,
    AuditPayloadError,
    AuditPayloadTooLarge,
    as_sent,
    parse_item,
    split_payload,
)
from vigil.agent.modules.kubernetes.problem_throttle import ProblemThrottle
from vigil.agent.modules.kubernetes.webhook_http import Answer, WebhookServer
from vigil.agent.modules.kubernetes.webhook_tls import WebhookTls, default_files
from vigil.config_kubernetes import AuditWebhookConfig
from vigil.errors import VigilError
from vigil.event import AgentRef, Event

# ProblemThrottle, WebhookTls and default_files moved out; still importable from here.
__all__ = ["AuditWebhook", "ProblemThrottle", "WebhookTls", "default_files"]

log = logging.getLogger(__name__)

NAME = "k8s_audit_webhook"
BATCH_EVENTS = 2000
TAKE_SECONDS = 0.2
DRAIN_SECONDS = 5.0
RETRY_AFTER = "2"


@dataclass
class _Job:
    events: list[Event]
    done: threading.Event = field(default_factory=threading.Event)


class AuditWebhook:
    name = NAME

    def __init__(self, config: AuditWebhookConfig, cluster: str, dedupe_entries: int, agent: AgentRef,
                 sink: BatchSink, data_dir: Path) -> None:
        self.config = config
        self.cluster = cluster
        self.agent = agent
        self.sink = sink
        self.tls = WebhookTls.resolve(config, data_dir)  # refuses to start without certificates
        self.dedupe = AuditDedupe(dedupe_entries)
        self._dedupe_lock = threading.Lock()
        self.problems = ProblemThrottle(NAME, agent)
        self.port: int | None = None
        self.listening = threading.Event()
        self.last_error: str | None = None
        self.counters = {"requests": 0, "accepted": 0, "events_received": 0, "events_stored": 0, "duplicates": 0,
                         "auth_failed": 0, "tls_failed": 0, "too_large": 0, "bad_request": 0, "malformed": 0,
                         "busy": 0, "items_dropped": 0, "connections_refused": 0, "store_failed": 0}
        self._lock = threading.Lock()
        self._jobs: deque[_Job] = deque()  # kept across runs: what one run could not store, the next one does
        self._queued = 0
        self._wake = threading.Condition(self._lock)
        self._slots = threading.BoundedSemaphore(config.max_connections)
        self._server: WebhookServer | None = None
        self._failure: BaseException | None = None

    def status(self) -> dict[str, Any]:
        with self._lock:
            counters = dict(self.counters)
            queued = self._queued
        return {"host": self.config.host, "port": self.port, "path": self.config.path,
                "listening": self.listening.is_set(), **counters, "queued": queued,
                "queue_events": self.config.queue_events, "last_error": self.last_error}

    def interrupt(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def run(self, stop: threading.Event) -> None:
        self._failure = None
        try:
            token = self.tls.token()
            server = WebhookServer(self, self.tls.context(), token, self._slots)
        except (OSError, ssl.SSLError, VigilError) as exc:  # port taken, unreadable key: retried with backoff
            self.last_error = str(exc)
            raise
        self._server = server
        done, failed = threading.Event(), threading.Event()
        writer = threading.Thread(target=self._write, args=(done, failed), name="k8s-audit-writer", daemon=True)
        writer.start()
        self.port = server.server_address[1]
        self.listening.set()
        self.last_error = None
        log.info("audit webhook listening on https://%s:%d%s", self.config.host, self.port, self.config.path)
        try:
            while not stop.is_set() and not failed.is_set():
                server.handle_request()
        finally:
            self.listening.clear()
            server.server_close()
            done.set()
            self.interrupt()
            writer.join()
        if self._failure is not None:
            self.last_error = f"storing audit events failed: {self._failure}"
            raise self._failure

    # --- what the listener calls (one thread per connection) ---

    def auth_failed(self, peer: str, why: str) -> None:
        """A request or TLS handshake refused for its credentials: counted, logged and reported."""
        self.count("auth_failed")
        log.info("audit webhook: refused a request from %s: %s", peer, why)
        self.note("auth_failed", peer, f"audit webhook request from {peer} refused: {why}", {"peer": peer})

    def accept(self, body: bytes, peer: str) -> tuple[int, str]:
        c = self.config
        location = f"{NAME}:{peer}"
        try:
            items = split_payload(body, max_events=c.max_events_per_request)
        except AuditPayloadTooLarge as exc:  # the API server should send smaller batches
            self.count("too_large")
            self.note("events_dropped", peer, f"an audit webhook request was refused: {exc}")
            raise Answer(413, str(exc)) from None
        except AuditPayloadError as exc:
            self.count("malformed")
            self.note("malformed_input", peer, f"an audit webhook request was refused: {exc}",
                      {"excerpt": body[:200].decode("utf-8", "replace")})
            raise Answer(400, str(exc)) from None
        # Room is taken before the dedupe sees the events: refused with 503, they must count as new on retry.
        reserved = len(items) + 1
        if not self._reserve(reserved):
            self.count("busy")
            raise Answer(503, "the queue is full; retry later", headers={"Retry-After": RETRY_AFTER})
        events: list[Event] = []
        dropped: list[str] = []
        # Each item is parsed, checked and normalised before the next is parsed, while its objects
        # are still in the CPU's cache. Under the lock: requests are served in parallel, and the
        # dedupe's LRU is not thread-safe.
        with self._dedupe_lock:
            for index, item in enumerate(items):
                obj = parse_item(item, index, c.max_event_bytes)
                if isinstance(obj, str):
                    dropped.append(obj)
                elif self.dedupe.is_new(obj):
                    events.append(audit_event(obj, module="kubernetes", source="webhook", cluster=self.cluster,
                                              location=location, agent=self.agent, sent=as_sent(item)))
        received = len(items) - len(dropped)
        duplicates = received - len(events)
        if dropped:
            self.count("items_dropped", len(dropped))
            event = self.problems.note("events_dropped", location, f"audit events dropped: {dropped[0]}",
                                       count=len(dropped))
            if event is not None:
                events.append(event)
        with self._lock:
            self.counters["events_received"] += received
            self.counters["duplicates"] += duplicates
        job = self._submit(events, reserved=reserved)
        if not events:
            self.count("accepted")
            return 200, "ok"
        if not job.done.wait(c.ack_timeout_seconds):
            self.count("busy")  # stored later by the writer; the retry's repeats are dropped
            raise Answer(503, "storing is slow; retry later", headers={"Retry-After": RETRY_AFTER})
        self.count("accepted")
        return 200, "ok"

    def note(self, kind: str, peer: str, message: str, details: dict[str, Any] | None = None) -> None:
        event = self.problems.note(kind, f"{NAME}:{peer}", message, details=details)
        if event is not None:
            self._submit([event])

    def count(self, name: str, step: int = 1) -> None:
        with self._lock:
            self.counters[name] += step

    def _reserve(self, count: int) -> bool:
        """Room for `count` events in the queue, taken now; False when there is not."""
        with self._lock:
            if self._queued + count > self.config.queue_events:
                return False
            self._queued += count
            return True

    def _submit(self, events: list[Event], reserved: int = 0) -> _Job:
        """Queue events for the writer (health events always fit), giving back what was reserved for them."""
        job = _Job(events)
        with self._wake:
            self._queued += len(events) - reserved
            if events:
                self._jobs.append(job)
                self._wake.notify()
        return job

    # --- the writer thread ---

    def _write(self, done: threading.Event, failed: threading.Event) -> None:
        deadline: float | None = None
        while True:
            jobs = self._take()
            if jobs and not self._store(jobs):
                failed.set()
                return
            if held := self.problems.due():
                self._submit(held)
            if done.is_set():
                deadline = deadline or time.monotonic() + DRAIN_SECONDS
                with self._lock:
                    left = self._queued
                if not left:
                    return
                if time.monotonic() >= deadline:
                    log.warning("audit webhook: %d events still queued at stop; the next start stores them", left)
                    return

    def _take(self) -> list[_Job]:
        jobs: list[_Job] = []
        with self._wake:
            if not self._jobs:
                self._wake.wait(TAKE_SECONDS)
            size = 0
            while self._jobs and (not jobs or size + len(self._jobs[0].events) <= BATCH_EVENTS):
                job = self._jobs.popleft()
                jobs.append(job)
                size += len(job.events)
        return jobs

    def _store(self, jobs: list[_Job]) -> bool:
        events = [e for job in jobs for e in job.events]
        try:
            self.sink(events, None)
        except Exception as exc:
            self._failure = exc
            with self._wake:
                self._jobs.extendleft(reversed(jobs))  # kept for the next run
                self.counters["store_failed"] += len(events)
            log.error("audit webhook: storing %d events failed: %s", len(events), exc)
            return False
        with self._lock:
            self._queued -= len(events)
            self.counters["events_stored"] += len(events)
        for job in jobs:
            job.done.set()
        return True
