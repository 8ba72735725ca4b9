"""A small Kubernetes API server on 127.0.0.1 that answers list and watch requests with RECORDED responses.

No kube-apiserver runs in the test environment. This plays back what one sends, in its wire format:
a list is `{"kind": "<Kind>List", "metadata": {"resourceVersion": ...}, "items": [...]}` (paged with
`limit`/`continue`); a watch (`?watch=true`, which the Python client spells `watch=True`) is a chunked
stream of `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": {...}}` lines. Recorded responses
live in tests/fixtures/kube_api/*.json. Each watch request takes the next scripted response for its
resource; with none left it is held open, as an idle watch is, until `timeoutSeconds`, a new script,
or the server stops. Every request is recorded so tests can check the resourceVersion asked for.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube_api"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@dataclass
class Script:
    """One scripted answer to a watch request."""

    lines: list[Any]  # watch events (dicts) or raw text lines (sent as they are)
    http_status: int = 200  # not 200: a plain JSON Status reply (HTTP 410 Gone) instead of a stream
    drop: bool = False  # after the lines, cut the connection without ending the chunked body


@dataclass
class Request:
    resource: str
    watch: bool
    query: dict[str, str]

    @property
    def resource_version(self) -> str | None:
        return self.query.get("resourceVersion")


class FakeKubeApi:
    """Start with `start()`, stop with `stop()`; `url` is what a kubeconfig's `server:` names."""

    def __init__(self) -> None:
        self.lists: dict[str, dict[str, Any]] = {}
        self.scripts: dict[str, list[Script]] = {}
        self.requests: list[Request] = []
        self.cond = threading.Condition()
        self.stopping = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-kube-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeKubeApi:
        self.thread.start()
        return self

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    # --- scripting ---

    def set_list(self, resource: str, body: dict[str, Any] | str) -> None:
        with self.cond:
            self.lists[resource] = load(body) if isinstance(body, str) else body

    def script(self, resource: str, *scripts: Script | str) -> None:
        """Queue answers for the next watch requests; a name is a recorded event list, streamed then ended."""
        with self.cond:
            queue = self.scripts.setdefault(resource, [])
            queue += [Script(load(s)) if isinstance(s, str) else s for s in scripts]
            self.cond.notify_all()

    def watches(self, resource: str) -> list[Request]:
        with self.cond:
            return [r for r in self.requests if r.resource == resource and r.watch]

    def lists_served(self, resource: str) -> list[Request]:
        with self.cond:
            return [r for r in self.requests if r.resource == resource and not r.watch]

    def _next_script(self, resource: str, timeout: float, streaming: bool = False,
                     gone: Callable[[], bool] = lambda: False) -> Script | None:
        """The next scripted answer, waiting up to `timeout` while the client is there; on an open stream
        an HTTP-status answer is left for the next request (the stream ends, as a watch does at its timeout)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.scripts.get(resource):
                left = deadline - time.monotonic()
                if self.stopping or left <= 0 or gone():
                    return None
                self.cond.wait(min(left, 0.05))
            if gone():  # a client that hung up must not take an answer meant for the next one
                return None
            if streaming and self.scripts[resource][0].http_status != 200:
                return None
            return self.scripts[resource].pop(0)


def _handler(api: FakeKubeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            resource = url.path.rstrip("/").rsplit("/", 1)[-1]
            watching = query.get("watch", "").lower() in ("true", "1")  # the Python client sends `True`
            with api.cond:
                api.requests.append(Request(resource, watching, query))
            try:
                self._answer(resource, watching, query)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client went away (stopped, or gave up): nothing to do

        def _answer(self, resource: str, watching: bool, query: dict[str, str]) -> None:
            if resource not in api.lists:
                self._json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                 "message": f"the server could not find the requested resource ({resource})",
                                 "code": 404})
            elif watching:
                self._watch(resource, float(query.get("timeoutSeconds", "30")))
            else:
                self._list(resource, query)

        def _list(self, resource: str, query: dict[str, str]) -> None:
            body = json.loads(json.dumps(api.lists[resource]))
            start = int(query.get("continue") or 0)
            limit = int(query.get("limit") or 0) or len(body["items"]) or 1
            items = body["items"]
            body["items"] = items[start:start + limit]
            if start + limit < len(items):
                body["metadata"]["continue"] = str(start + limit)
            self._json(200, body)

        def _watch(self, resource: str, timeout: float) -> None:
            # As the API server: an expired version is refused at once (HTTP 410); otherwise the stream
            # starts at once and events are sent as they come.
            script = api._next_script(resource, 0)
            if script is not None and script.http_status != 200:
                self._json(script.http_status, script.lines[0] if script.lines else {})
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            if script is None:
                script = api._next_script(resource, timeout, streaming=True, gone=self._client_gone)
            for line in script.lines if script is not None else []:
                text = line if isinstance(line, str) else json.dumps(line)
                data = (text + "\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            if script is not None and script.drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(b"0\r\n\r\n")

        def _client_gone(self) -> bool:
            """The client closed its end (a watch client sends nothing more, so readable means EOF)."""
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            try:
                return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
            except OSError:
                return True

        def _json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
