"""Subscribes to the Docker Engine's event stream; resumes from a durable checkpoint, reconnects with backoff."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import docker
import docker.errors
import requests

from vigil.agent.modules.base import Sink
from vigil.agent.modules.docker import normalize
from vigil.agent.modules.docker.checkpoint import Checkpoint, since_text
from vigil.agent.modules.docker.engine_client import engine_url, open_client
from vigil.agent.modules.docker.enrich import Enricher
from vigil.agent.modules.docker.framing import frame_lines
from vigil.alert import wazuh_timestamp
from vigil.config import DockerConfig
from vigil.errors import EventError
from vigil.event import AgentRef, Event

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "docker.checkpoint"
IMAGES_KEY = "docker.images"


def starting_state(saved: dict[str, Any]) -> dict[str, Any] | None:
    """On the very first start, a checkpoint at this moment, for the runtime to store before the module runs.

    Without it, an agent stopped before its first event would start again from its new start time
    and miss what happened on the engine while it was down."""
    if Checkpoint.from_state(saved.get(CHECKPOINT_KEY)).since() is not None:
        return None
    return {CHECKPOINT_KEY: Checkpoint(start_nano=time.time_ns()).to_state()}


_CONNECTION_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError, ConnectionError)


class DockerModule:
    """The Docker module: one engine, one event stream, every event handed to the sink once."""

    name = "docker"

    def __init__(self, config: DockerConfig, agent: AgentRef, sink: Sink, saved: dict[str, Any]) -> None:
        self.config = config
        self.agent = agent
        self.sink = sink
        self.url = engine_url(config)
        self.checkpoint = Checkpoint.from_state(saved.get(CHECKPOINT_KEY))
        # With no checkpoint yet, follow from this moment, not from the first successful connection:
        # what happens while the engine is still out of reach must not be missed.
        self.first_since = since_text(time.time_ns())
        self.enricher = Enricher(config.inspect, saved.get(IMAGES_KEY) or {})
        self.connected = False
        self.counters = {"events": 0, "duplicates_skipped": 0, "malformed": 0, "reconnects": 0, "possible_gaps": 0}
        self._stream: Any = None
        self._lock = threading.Lock()

    def status(self) -> dict[str, Any]:
        return {"engine": self.url, "connected": self.connected, "checkpoint": self.checkpoint.since(),
                "inspect_errors": self.enricher.inspect_errors, **self.counters}

    def interrupt(self) -> None:
        with self._lock:
            stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:
                log.debug("closing the Docker event stream failed", exc_info=True)

    def run(self, stop: threading.Event) -> None:
        delay = self.config.reconnect_min_seconds
        down_since: float | None = None
        seeded = False
        while not stop.is_set():
            client = None
            try:
                client = open_client(self.config)
                client.ping()
                if not seeded:
                    self.enricher.seed_images(client)
                    seeded = True
                if down_since is not None:
                    self._reconnected(time.monotonic() - down_since)
                down_since = None
                delay = self.config.reconnect_min_seconds
                log.info("Docker module: following events from %s (resuming at %s)", self.url,
                         self.checkpoint.since() or f"{self.first_since}, when Vigil started")
                self._follow(client, stop)
                if not stop.is_set():
                    raise ConnectionError("the engine closed the event stream")
            except _CONNECTION_ERRORS as exc:
                if stop.is_set():
                    break
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("Docker engine not reachable at %s (%s); Vigil keeps running and "
                                "connects when it appears", self.url, _first_line(exc))
                stop.wait(delay)
                delay = min(delay * 2, self.config.reconnect_max_seconds)
            finally:
                self.connected = False  # set again by _follow once a new subscription is answered
                if client is not None:
                    client.close()

    def _follow(self, client: docker.DockerClient, stop: threading.Event) -> None:
        resume_from = self.checkpoint.time_nano or self.checkpoint.start_nano
        connected_at = time.time_ns()
        replayed = 0
        first_replayed: int | None = None
        stream = client.api.events(since=self.checkpoint.since() or self.first_since, decode=False)
        self.connected = True  # the engine has answered the subscription: events from now on reach us
        with self._lock:
            self._stream = stream
        try:
            for line, length in frame_lines(stream, self.config.max_event_bytes):
                if stop.is_set():
                    return
                time_nano = self._handle(client, line, length)
                if not resume_from or time_nano is None or time_nano >= connected_at:
                    continue
                replayed += 1
                first_replayed = time_nano if first_replayed is None else first_replayed
                if replayed == self.config.engine_event_buffer and first_replayed > resume_from:
                    self._maybe_lost(resume_from, first_replayed)
        finally:
            with self._lock:
                self._stream = None
            stream.close()

    def _handle(self, client: docker.DockerClient, line: bytes, length: int) -> int | None:
        """Hand one event to the sink (once); returns its engine time, or None when it was unreadable."""
        try:
            if length > len(line):
                raise EventError(f"event of {length} bytes is larger than the {self.config.max_event_bytes}-byte limit")
            obj = normalize.parse_event(line, self.config.max_event_bytes)
        except EventError as exc:
            self.counters["malformed"] += 1
            log.warning("Docker module: %s", exc)
            self.sink(normalize.error_event(self.agent, str(exc), line, time.time()), None)
            return None
        time_nano = normalize.event_time_nano(obj)
        digest = normalize.event_digest(line)
        if not self.checkpoint.is_new(time_nano, digest):
            self.counters["duplicates_skipped"] += 1
            return time_nano
        enrichment = self.enricher.enrich(client, obj) if self._needs_client(obj) else {}
        event = normalize.build_event(obj, self.agent, enrichment)
        moved = self.checkpoint.advanced(time_nano, digest)
        state: dict[str, Any] = {CHECKPOINT_KEY: moved.to_state()}
        if "image" in enrichment:
            state[IMAGES_KEY] = self.enricher.images
        self.sink(event, state)  # raises if it could not be stored: then the checkpoint stays put
        self.checkpoint = moved
        self.counters["events"] += 1
        return time_nano

    def _maybe_lost(self, resume_from: int, first_replayed: int) -> None:
        """The engine replayed as many events as it keeps, starting after our checkpoint: a gap is likely."""
        self.counters["possible_gaps"] += 1
        gap = f"{_iso(resume_from)} and {_iso(first_replayed)}"
        message = (f"the engine keeps only its last {self.config.engine_event_buffer} events; "
                   f"events between {gap} happened while Vigil was not connected and may be gone")
        log.warning("Docker module: %s", message)
        event = Event(
            module="docker", location=normalize.LOCATION, timestamp=time.time(), decoder="vigil", agent=self.agent,
            data={"vigil": {"module": "docker", "kind": "events_dropped", "count": "an unknown number of",
                            "error": message, "from": _iso(resume_from), "to": _iso(first_replayed)}},
        )
        self.sink(event, None)

    @staticmethod
    def _needs_client(obj: dict[str, Any]) -> bool:
        return obj.get("Type") in ("container", "image")

    def _reconnected(self, outage: float) -> None:
        self.counters["reconnects"] += 1
        log.info("Docker module: reconnected to %s after %.1f s", self.url, outage)
        event = Event(
            module="docker", location=normalize.LOCATION, timestamp=time.time(), decoder="vigil", agent=self.agent,
            data={"vigil": {"module": "docker", "kind": "reconnected", "target": self.url,
                            "outage_seconds": round(outage, 1)}},
        )
        self.sink(event, None)


def _iso(time_nano: int) -> str:
    return wazuh_timestamp(time_nano / 1e9)


def _first_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
