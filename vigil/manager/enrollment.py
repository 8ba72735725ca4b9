"""The enrollment listener (Wazuh's authd, port 1515): agents get an id and a client certificate.

One JSON request line and one JSON answer line per TLS 1.3 connection:

    {"op": "ca"}                                           -> {"ca": "<PEM>"}
    {"op": "enroll", "name": "...", "csr": "<PEM>", "secret": "..."}   (or "token": "...")
                                                           -> {"agent_id": "001", "name": "...", "cert": "<PEM>",
                                                               "ca": "<PEM>", "rejoined": false}

`ca` lets a new agent check the CA against the pin its operator gave it before it sends any secret;
it then reconnects verifying the manager against that CA. Every refusal is answered with
{"error": "..."} and logged once with the peer's address; the listener keeps serving others.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization

from vigil.certs import EnrollmentError
from vigil.manager.listener import ThreadedListener
from vigil.manager.pki import ManagerPKI
from vigil.manager.registry import AgentRegistry

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
REQUEST_TIMEOUT_SECONDS = 10.0


class EnrollmentServer:
    """A thread per connection: enrollment is rare, and a blocking handshake lets every failure be logged."""

    def __init__(self, pki: ManagerPKI, registry: AgentRegistry, secret: str | Callable[[], str | None] | None
                 ) -> None:
        self.pki = pki
        self.registry = registry
        self.secret = secret
        self.refused = 0
        self.enrolled = 0
        self._context = pki.server_context(require_client_cert=False)
        self._listener = ThreadedListener("vigil-enrollment", self._serve)
        self._lock = threading.Lock()

    def start(self, host: str, port: int) -> int:
        """Listen in a background thread; returns the port (useful with port 0)."""
        bound = self._listener.start(host, port)
        log.info("enrollment listening on %s:%d (TLS 1.3)", host, bound)
        return bound

    def stop(self) -> None:
        self._listener.stop()

    def _serve(self, raw: socket.socket, address: Any) -> None:
        ip = address[0] if isinstance(address, tuple) else None
        raw.settimeout(REQUEST_TIMEOUT_SECONDS)
        try:
            tls = self._context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self._count_refusal()
            log.warning("enrollment: TLS handshake with %s failed (%s); plaintext or not TLS 1.3?", ip,
                        getattr(exc, "reason", None) or type(exc).__name__)
            return
        with tls:
            try:
                answer = self._answer(_read_line(tls), ip)
            except _Oversize:
                answer = self._refuse(ip, f"request larger than {MAX_REQUEST_BYTES} bytes")
            except (ssl.SSLError, OSError) as exc:
                self._count_refusal()
                log.warning("enrollment: connection from %s dropped (%s)", ip, type(exc).__name__)
                return
            with contextlib.suppress(ssl.SSLError, OSError):  # the peer left; nothing to tell it
                tls.sendall(orjson.dumps(answer) + b"\n")

    def _count_refusal(self) -> None:
        with self._lock:
            self.refused += 1

    def _refuse(self, ip: str | None, reason: str) -> dict[str, Any]:
        self._count_refusal()
        log.warning("enrollment refused for %s: %s", ip, reason)
        return {"error": reason}

    def _answer(self, line: bytes, ip: str | None) -> dict[str, Any]:
        try:
            request = orjson.loads(line)
        except orjson.JSONDecodeError:
            return self._refuse(ip, "the request is not one line of JSON")
        if not isinstance(request, dict):
            return self._refuse(ip, "the request must be a JSON object")
        op = request.get("op")
        if op == "ca":
            return {"ca": self.pki.ca_pem.decode()}
        if op != "enroll":
            return self._refuse(ip, f"unknown op {op!r} (expected 'ca' or 'enroll')")
        name, csr = request.get("name"), request.get("csr")
        if not isinstance(name, str) or not isinstance(csr, str):
            return self._refuse(ip, "enroll needs 'name' and 'csr' strings")
        try:
            public_key = self.pki.request_key(csr.encode())  # checked before a token is spent
            self._authenticate(request, name)
            issued: dict[str, bytes] = {}

            def issue(agent_id: str) -> str:
                cert = self.pki.sign_agent(public_key, agent_id)
                issued["pem"] = cert.public_bytes(serialization.Encoding.PEM)
                return format(cert.serial_number, "x")

            agent_id, rejoined = self.registry.enroll(name, ip, issue)
        except EnrollmentError as exc:
            return self._refuse(ip, f"{name!r}: {exc}")
        with self._lock:
            self.enrolled += 1
        log.info("agent %s enrolled as %s from %s%s", name, agent_id, ip, " (re-joined, old certificate revoked)"
                 if rejoined else "")
        return {"agent_id": agent_id, "name": name, "cert": issued["pem"].decode(), "ca": self.pki.ca_pem.decode(),
                "rejoined": rejoined}

    def _authenticate(self, request: dict[str, Any], name: str) -> None:
        secret, token = request.get("secret"), request.get("token")
        if isinstance(token, str):
            self.registry.use_token(token, name)
            return
        if isinstance(secret, str):
            # Read on every request, so a rotated secret file takes effect without a restart.
            expected = self.secret() if callable(self.secret) else self.secret
            if not expected or not hmac.compare_digest(secret.encode(), expected.encode()):
                raise EnrollmentError("wrong enrollment secret")
            return
        raise EnrollmentError("no enrollment secret or token")


class _Oversize(Exception):
    pass


def _read_line(tls: ssl.SSLSocket) -> bytes:
    """One request line, at most MAX_REQUEST_BYTES; a peer that stops sending times out."""
    data = b""
    while b"\n" not in data:
        chunk = tls.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise _Oversize
    return data.split(b"\n", 1)[0]
