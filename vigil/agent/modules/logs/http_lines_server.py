"""The HTTP side of the http_logs module: a threaded server that takes `POST /v1/logs` and answers once the
module has stored the request's lines (200), is still storing them (202) or cannot take them (503)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import orjson

from vigil.agent.modules.logs.http_lines_parsing import IDENTITY_HEADERS, header_identity, line_events, split_body
from vigil.agent.modules.logs.lines import TEXT_DECODER
from vigil.config_kubernetes import HttpLogsConfig
from vigil.event import AgentRef, Event

log = logging.getLogger(__name__)

PATH = "/v1/logs"
CONTENT_TYPES = {"application/x-ndjson", "application/jsonl", "application/json", "text/plain"}
RETRY_AFTER_SECONDS = 1
SOCKET_TIMEOUT_SECONDS = 30.0  # an idle or stalled client is dropped after this
LINGER_SECONDS = 1.0
LINGER_BYTES = 1024 * 1024


@dataclass(eq=False)
class Pending:
    """One request's events, queued whole; `done` is set once stored or refused."""

    events: list[Event]
    done: threading.Event = field(default_factory=threading.Event)
    stored: bool = False
    abandoned: bool = False  # answered 202: nobody waits, the lines must still be stored


class LinesIntake(Protocol):
    """What the server needs from the module: its settings, its counters and its queue."""

    config: HttpLogsConfig
    agent: AgentRef

    def count(self, name: str, step: int = 1) -> None: ...

    def offer(self, events: list[Event]) -> Pending | None: ...

    def wait(self, pending: Pending) -> bool | None: ...


class LinesServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], receiver: LinesIntake) -> None:
        self.receiver = receiver
        self.active = 0
        self._active_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, LinesHandler)

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


class LinesHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_SECONDS
    server: LinesServer

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
