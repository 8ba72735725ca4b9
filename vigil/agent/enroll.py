"""Agent side of enrollment: check the manager's CA against the operator's pin, then ask for an identity.

What it writes under the agent's data directory (`identity/`): agent.key (0600), agent.pem, ca.pem and
identity.json ({agent_id, name, manager}); the event channel uses them on every connection.
"""

from __future__ import annotations

import json
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from vigil.certs import (
    EnrollmentError,
    check_agent_name,
    check_pin,
    key_pem,
    make_csr,
    new_key,
    write_private,
)
from vigil.tls import client_context

TIMEOUT_SECONDS = 15.0
MAX_ANSWER_BYTES = 256 * 1024


@dataclass(frozen=True)
class Identity:
    agent_id: str
    name: str
    manager: str
    directory: Path
    rejoined: bool = False


def _exchange(host: str, port: int, context: ssl.SSLContext, request: dict[str, Any]) -> dict[str, Any]:
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_SECONDS) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(orjson.dumps(request) + b"\n")
            data = b""
            while not data.endswith(b"\n") and len(data) <= MAX_ANSWER_BYTES:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                data += chunk
    except ssl.SSLCertVerificationError as exc:
        raise EnrollmentError(f"the manager at {host}:{port} failed verification: {exc.verify_message}") from exc
    except (OSError, ssl.SSLError) as exc:
        raise EnrollmentError(f"cannot reach the manager at {host}:{port}: {exc}") from exc
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EnrollmentError(f"the manager at {host}:{port} answered something that is not JSON") from exc
    if not isinstance(answer, dict):
        raise EnrollmentError("the manager's answer is not a JSON object")
    if "error" in answer:
        raise EnrollmentError(f"the manager refused: {answer['error']}")
    return answer


def fetch_ca(host: str, port: int, pin: str) -> bytes:
    """First contact, before any secret is sent: nothing is trusted but the pin."""
    insecure = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    insecure.minimum_version = ssl.TLSVersion.TLSv1_3
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    ca = _exchange(host, port, insecure, {"op": "ca"}).get("ca")
    if not isinstance(ca, str):
        raise EnrollmentError("the manager did not send its CA")
    check_pin(ca.encode(), pin)
    return ca.encode()


def enroll(host: str, port: int, pin: str, name: str, directory: Path, *, secret: str | None = None,
           token: str | None = None) -> Identity:
    """Join the manager; a second call for the same name gets the same id back with a new key."""
    if (secret is None) == (token is None):
        raise EnrollmentError("give exactly one of an enrollment secret or a one-time token")
    check_agent_name(name)
    ca_pem = fetch_ca(host, port, pin)
    key = new_key()
    request: dict[str, Any] = {"op": "enroll", "name": name, "csr": make_csr(key, name).decode()}
    request["secret" if secret is not None else "token"] = secret if secret is not None else token
    answer = _exchange(host, port, client_context(ca_pem), request)
    agent_id, cert = answer.get("agent_id"), answer.get("cert")
    if not isinstance(agent_id, str) or not isinstance(cert, str):
        raise EnrollmentError("the manager's answer has no agent_id and cert")
    directory.mkdir(parents=True, exist_ok=True)
    write_private(directory / "agent.key", key_pem(key))
    (directory / "agent.pem").write_text(cert)
    (directory / "ca.pem").write_bytes(ca_pem)
    (directory / "identity.json").write_text(json.dumps(
        {"agent_id": agent_id, "name": name, "manager": f"{host}:{port}"}, indent=2) + "\n")
    return Identity(agent_id, name, f"{host}:{port}", directory, bool(answer.get("rejoined")))
