"""The audit webhook's HTTPS listener: TLS, the path, the client's credentials and the body's limits
are all checked before the body is read; the body then goes to `WebhookApp.accept`.

It knows the module that owns it only as `WebhookApp`, so it does not import it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from vigil.agent.modules.kubernetes.webhook_tls import refusal
from vigil.config_kubernetes import AuditWebhookConfig

log = logging.getLogger(__name__)

HANDSHAKE_SECONDS = 10.0
IDLE_SECONDS = 60.0  # a kept-alive connection with no request is closed after this
LINGER_BYTES = 1024 * 1024  # after a refusal, so the client sees the answer rather than a reset


class WebhookApp(Protocol):
    """What the listener needs from its owner: the config, counters, health events and the body's use."""

    @property
    def config(self) -> AuditWebhookConfig: ...

    def count(self, name: str, step: int = 1) -> None: ...

    def note(self, kind: str, peer: str, message: str, details: dict[str, Any] | None = None) -> None: ...

    def auth_failed(self, peer: str, why: str) -> None: ...

    def accept(self, body: bytes, peer: str) -> tuple[int, str]:
        """Status and message for a body that passed every check; may raise Answer."""
        ...


class Answer(Exception):
    """Ends a request with this status (and closes the connection when `close`)."""

    def __init__(self, status: int, message: str, close: bool = False, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.close, self.headers = status, message, close, headers or {}


class WebhookServer(ThreadingHTTPServer):
    """Accepts plain sockets and does the TLS handshake in the connection's thread, so a slow client
    holds up nobody; at most as many as `slots` allows are served at once."""

    daemon_threads = True
    timeout = 0.5

    def __init__(self, app: WebhookApp, context: ssl.SSLContext, token: bytes | None,
                 slots: threading.BoundedSemaphore) -> None:
        self.app = app
        self.context = context
        self.token = token
        self.slots = slots
        if ":" in app.config.host:
            self.address_family = socket.AF_INET6
        super().__init__((app.config.host, app.config.port), _Handler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        if self.slots.acquire(blocking=False):
            return True
        self.app.count("connections_refused")
        return False

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_SECONDS)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.app.count("tls_failed")
            if "CERTIFICATE" in str(exc).upper():
                self.app.auth_failed(client_address[0], f"TLS handshake refused the client certificate: {exc}")
            else:
                log.debug("audit webhook: TLS handshake with %s failed: %s", client_address[0], exc)
            return
        try:
            _Handler(tls, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                tls.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vigil"
    sys_version = ""
    timeout = IDLE_SECONDS
    server: WebhookServer

    def do_POST(self) -> None:
        app = self.server.app
        app.count("requests")
        peer = self.client_address[0]
        try:
            if urlsplit(self.path).path != app.config.path:
                raise Answer(404, "not found")
            self._authenticate(peer)
            body = self._read_body()
            status, message = app.accept(body, peer)
        except Answer as answer:
            _reply(self, answer.status, answer.message, answer.close, answer.headers)
            return
        _reply(self, status, message)

    def do_GET(self) -> None:
        self.server.app.count("requests")
        found = urlsplit(self.path).path == self.server.app.config.path
        _reply(self, 405 if found else 404, "only POST is allowed" if found else "not found",
               close=self.command == "HEAD", headers={"Allow": "POST"} if found else None)

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("audit webhook: %s %s", self.client_address[0], format % args)

    def _authenticate(self, peer: str) -> None:
        sock = self.connection
        cert = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
        refused = refusal(cert, self.headers.get("Authorization", ""), self.server.app.config.client_names,
                          self.server.token)
        if refused is None:
            return
        status, why = refused
        self.server.app.auth_failed(peer, why)
        raise Answer(status, "forbidden" if status == 403 else "unauthorized", close=True,
                     headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)

    def _read_body(self) -> bytes:
        app = self.server.app
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            app.count("bad_request")
            raise Answer(415, "the body must be application/json", close=True)
        if self.headers.get("Transfer-Encoding"):
            app.count("bad_request")
            raise Answer(411, "a Content-Length is required (chunked bodies are not taken)", close=True)
        raw = self.headers.get("Content-Length")
        try:
            length = int(raw) if raw is not None else -1
        except ValueError:
            length = -1
        if length < 0:
            app.count("bad_request")
            raise Answer(411, "a valid Content-Length is required", close=True)
        limit = app.config.max_body_bytes
        if length > limit:
            app.count("too_large")
            app.note("events_dropped", self.client_address[0],
                     f"an audit webhook request of {length} bytes was refused (max_body_bytes {limit})")
            raise Answer(413, f"the body is larger than {limit} bytes", close=True)
        body = self.rfile.read(length)
        if len(body) != length:
            raise Answer(400, "the body ended early", close=True)
        return body


def _reply(handler: _Handler, status: int, message: str, close: bool = False,
           headers: dict[str, str] | None = None) -> None:
    body = (message + "\n").encode()
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "text/plain; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        if close:
            handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(body)
        handler.wfile.flush()
    except OSError:
        close = True
    if close:
        handler.close_connection = True
        _linger(handler.connection)


def _linger(sock: socket.socket) -> None:
    """Refused unread: discard a little of what the client still sends (not kept, not parsed), so that
    closing does not reset the connection before the client has read the answer."""
    with contextlib.suppress(OSError, ValueError):
        sock.settimeout(0.2)
        deadline = time.monotonic() + 1.0
        got = 0
        while got < LINGER_BYTES and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += len(chunk)
