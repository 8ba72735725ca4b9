"""A TCP listener that hands each connection to its own thread: the enrollment and agent channels use it.

Blocking TLS handshakes in a thread let every failed handshake be logged and counted (asyncio's
TLS server drops them silently), and a stalled peer holds up nobody else.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[socket.socket, Any], None]


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128


class ThreadedListener:
    def __init__(self, name: str, handle: Handler) -> None:
        self.name = name
        self.handle = handle
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, host: str, port: int) -> int:
        """Listen in a background thread; returns the bound port (useful with port 0)."""
        handle = self.handle

        class Request(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                handle(self.request, self.client_address)

        self._server = _Server((host, port), Request)
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.name, daemon=True)
        self._thread.start()
        bound: int = self._server.server_address[1]
        return bound

    def stop(self) -> None:
        """Stop accepting; connections already open are closed by their owners."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
