"""A stand-in Docker Engine on a unix socket that sends the hostile event stream a real one never would.

Used only for malformed input (truncated JSON, 5 MB events, invalid UTF-8): a real dockerd
cannot be made to emit these. It answers just enough of the Engine API for the Docker SDK.
"""

from __future__ import annotations

import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Self


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    lines: list[bytes]
    served: bool
    closing: threading.Event


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def address_string(self) -> str:
        return "fake-engine-client"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _json(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Api-Version", "1.41")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.endswith("/_ping"):
            body = b"OK"
            self.send_response(200)
            self.send_header("Api-Version", "1.41")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path.endswith("/version"):
            self._json(200, {"Version": "20.10.24", "ApiVersion": "1.41", "MinAPIVersion": "1.12"})
        elif path.endswith("/images/json"):
            self._json(200, [])
        elif path.endswith("/events"):
            self._events()
        else:
            self._json(404, {"message": f"No such object: {path}"})

    def _events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if not self.server.served:
            self.server.served = True
            for line in self.server.lines:
                chunk = line + b"\n"
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
        self.server.closing.wait()


class FakeEngine:
    """Serves `lines` once on the first /events request, then keeps the stream open and quiet."""

    def __init__(self, socket_path: Path, lines: list[bytes]) -> None:
        self.socket_path = socket_path
        self.server = _Server(str(socket_path), _Handler)
        self.server.lines = lines
        self.server.served = False
        self.server.closing = threading.Event()
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.closing.set()
        self.server.shutdown()
        self.server.server_close()
        self.socket_path.unlink(missing_ok=True)
