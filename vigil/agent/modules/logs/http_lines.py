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
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from vigil.agent.modules.base import BatchSink
from vigil.agent.modules.logs.lines import TEXT_DECODER, as_text, line_event
from vigil.config_kubernetes import HttpLogsConfig
from vigil.errors import ListenError
from vigil.event import AgentRef, Event

log = logging.getLogger(__name__)

PATH = "/v1/logs"
CONTENT_TYPES = {"application/x-ndjson", "application/jsonl", "application/json", "text/plain"}
IDENTITY_HEADERS = {"pod": "X-Vigil-Pod", "namespace": "X-Vigil-Namespace", "container": "X-Vigil-Container"}
# Fluent Bit's kubernetes filter names them pod_name, namespace_name, container_name.
IDENTITY_ALIASES = {"pod": ("pod", "pod_name"), "namespace": ("namespace", "namespace_name"),
                    "container": ("container", "container_name")}
MAX_NAME = 253  # a DNS subdomain, the longest Kubernetes object name
BATCH_EVENTS = 2000
TAKE_SECONDS = 0.2
DRAIN_SECONDS = 5.0
RETRY_AFTER_SECONDS = 1
SOCKET_TIMEOUT_SECONDS = 30.0  # an idle or stalled client is dropped after this
LINGER_SECONDS = 1.0
LINGER_BYTES = 1024 * 1024


# --- pure: a request body to events ---

def split_body(body: bytes, content_type: str) -> list[bytes]:
    """The lines of a body; an `application/json` body that is one object or an array is taken whole."""
    if content_type == "application/json" and body.lstrip()[:1] in (b"{", b"["):
        with contextlib.suppress(orjson.JSONDecodeError):
            value = orjson.loads(body)
            items = value if isinstance(value, list) else [value]
            return [item.encode() if isinstance(item, str) else orjson.dumps(item) for item in items]
    lines = body.split(b"\n")
    return [line[:-1] if line.endswith(b"\r") else line for line in lines if line.strip()]


def clean_name(value: Any) -> str | None:
    """A pod, namespace or container name as sent, if it is a usable one."""
    if not isinstance(value, str):
        return None
    name = value.strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        return None
    return name


def header_identity(headers: dict[str, str]) -> dict[str, str]:
    out = {key: clean_name(headers.get(header)) for key, header in IDENTITY_HEADERS.items()}
    return {key: value for key, value in out.items() if value is not None}


def line_identity(obj: dict[str, Any]) -> dict[str, str]:
    """`kubernetes: {pod, namespace, container}` (or Fluent Bit's `pod_name`, ...) in a JSON line."""
    block = obj.get("kubernetes")
    if not isinstance(block, dict):
        return {}
    out: dict[str, str] = {}
    for key, names in IDENTITY_ALIASES.items():
        for name in names:
            value = clean_name(block.get(name))
            if value is not None:
                out[key] = value
                break
    return out


def line_events(lines: list[bytes], location: str, agent: AgentRef, limit: int, now: float,
                identity: dict[str, str]) -> list[Event]:
    """One event per line; a line that names its pod replaces the headers' identity (one sender, many pods)."""
    return [_line(line, location, agent, limit, now, identity) for line in lines]


def _line(line: bytes, location: str, agent: AgentRef, limit: int, now: float, identity: dict[str, str]) -> Event:
    obj = _json_object(line) if len(line) <= limit else None
    who = (line_identity(obj) if obj is not None else None) or identity
    meta: dict[str, Any] = {"kubernetes": dict(who)} if who else {}
    if obj is None:  # text, or a line too long to keep whole: cut and marked like any collected line
        return line_event(line, location, agent, limit, now, meta)
    meta["json"] = obj
    text = next((obj[k] for k in ("message", "log") if isinstance(obj.get(k), str)), None)
    # A message that is itself a JSON object is not handed on as text: the manager would take that object
    # as the whole event, dropping the pod and letting the sender pose as another source.
    if text is not None and _json_object(encoded := text.encode()) is None:
        return line_event(encoded, location, agent, limit, now, meta)
    # Structured only: the object is the event; kept under `json` so a sender cannot pose as another source.
    raw, _notes = as_text(line, limit)
    return Event(module="logs", location=location, timestamp=now, data=meta, decoder="json", agent=agent, raw=raw)


def _json_object(line: bytes) -> dict[str, Any] | None:
    if line.lstrip()[:1] != b"{":
        return None
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


# --- the module ---

@dataclass(eq=False)
class Pending:
    """One request's events, queued whole; `done` is set once stored or refused."""

    events: list[Event]
    done: threading.Event = field(default_factory=threading.Event)
    stored: bool = False
    abandoned: bool = False  # answered 202: nobody waits, the lines must still be stored


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

    def _listen(self) -> _Server:
        host = self.config.host
        try:
            server = _Server((host, self.config.port), self)
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], receiver: HttpLinesReceiver) -> None:
        self.receiver = receiver
        self.active = 0
        self._active_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            full = self.active >= self.receiver.config.max_clients
            if not full:
                self.active += 1
        if full:
            self.receiver.count("connections_refused")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._active_lock:
                self.active -= 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_SECONDS
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http log receiver: %s " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        self._refuse_method()

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def do_POST(self) -> None:
        receiver = self.server.receiver
        config = receiver.config
        if self.path.split("?", 1)[0] != PATH:
            return self._error(404, f"no such endpoint: POST {PATH}")
        content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if content_type not in CONTENT_TYPES:
            return self._error(415, f"Content-Type must be one of {', '.join(sorted(CONTENT_TYPES))}")
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            return self._error(411, "a Content-Length is required (chunked bodies are not taken)")
        length = int(length_text)
        if length > config.max_body_bytes:
            return self._error(413, f"the body is {length} bytes; at most {config.max_body_bytes} are taken")
        body = self.rfile.read(length)
        if len(body) != length:
            return self._error(400, f"the body ended after {len(body)} of {length} bytes")
        lines = split_body(body, content_type)
        if len(lines) > config.max_lines_per_request:
            return self._error(413, f"{len(lines)} lines; at most {config.max_lines_per_request} per request")
        headers = {name: value for name in IDENTITY_HEADERS.values() if (value := self.headers.get(name))}
        events = line_events(lines, f"http_logs:{self.client_address[0]}", receiver.agent, config.max_line_bytes,
                             time.time(), header_identity(headers))
        self._note(events)
        pending = receiver.offer(events)
        if pending is None:
            return self._error(503, "the receiver is busy or stopping; send again later", retry=True)
        stored = receiver.wait(pending)
        if stored is False:
            return self._error(503, "the lines could not be stored; send again later", retry=True)
        self._reply(200 if stored else 202, {"accepted": len(events), "stored": bool(stored)})

    def _note(self, events: list[Event]) -> None:
        receiver = self.server.receiver
        receiver.count("requests")
        receiver.count("lines", len(events))
        notes = [e.data.get("log") for e in events if e.decoder == TEXT_DECODER]
        receiver.count("truncated", sum(1 for n in notes if n and n.get("truncated")))
        receiver.count("invalid_bytes", sum(1 for n in notes if n and n.get("invalid_bytes")))

    def _refuse_method(self) -> None:
        self._error(405, f"only POST {PATH} is served", allow=True)

    def _error(self, code: int, message: str, retry: bool = False, allow: bool = False) -> None:
        if code != 503:
            self.server.receiver.count("refused")
        # The body of a refused request is not read, so the connection cannot carry another one.
        self.close_connection = code != 503
        extra = {"Retry-After": str(RETRY_AFTER_SECONDS)} if retry else {}
        if allow:
            extra["Allow"] = "POST"
        self._reply(code, {"error": message}, extra)
        if self.close_connection:
            self._linger()

    def _linger(self) -> None:
        """Closing with the body unread would reset the connection and the client might lose the answer: so
        the answer goes first, then what the client still sends is read and thrown away for a moment."""
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(LINGER_SECONDS)
            left = LINGER_BYTES
            while left > 0 and (chunk := self.connection.recv(min(left, 65536))):
                left -= len(chunk)

    def _reply(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        payload = orjson.dumps(body) + b"\n"
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
