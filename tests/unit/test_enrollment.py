"""Enrollment over real TLS 1.3 on loopback: the manager's listener in a thread, the agent's client as shipped."""

from __future__ import annotations

import logging
import socket
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from vigil.agent.enroll import enroll, fetch_ca
from vigil.certs import EnrollmentError
from vigil.manager.enrollment import MAX_REQUEST_BYTES, EnrollmentServer
from vigil.manager.pki import ManagerPKI
from vigil.manager.registry import AgentRegistry
from vigil.tls import client_context

SECRET = "s3cret-enrollment"


class Manager:
    """An EnrollmentServer on 127.0.0.1, listening in its own thread."""

    def __init__(self, data: Path, clock: list[float]) -> None:
        self.pki = ManagerPKI.load_or_create(data / "pki", ["127.0.0.1", "localhost"])
        self.registry = AgentRegistry(data / "agents.db", clock=lambda: clock[0])
        self.server = EnrollmentServer(self.pki, self.registry, SECRET)
        self.port = self.server.start("127.0.0.1", 0)

    def close(self) -> None:
        self.server.stop()
        self.registry.close()


@pytest.fixture()
def clock() -> list[float]:
    return [1_800_000_000.0]


@pytest.fixture()
def manager(tmp_path: Path, clock: list[float]) -> Iterator[Manager]:
    m = Manager(tmp_path / "manager", clock)
    yield m
    m.close()


def join(manager: Manager, tmp_path: Path, name: str, **auth: str) -> tuple[str, Path]:
    directory = tmp_path / "agents" / name
    auth = auth or {"secret": SECRET}
    identity = enroll("127.0.0.1", manager.port, manager.pki.pin, name, directory, **auth)
    return identity.agent_id, directory


def serial_of(directory: Path) -> str:
    return format(x509.load_pem_x509_certificate((directory / "agent.pem").read_bytes()).serial_number, "x")


def raw_request(port: int, payload: bytes) -> bytes:
    """Talk to the listener over TLS 1.3 without the client library's checks."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        tls.sendall(payload)
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    return data


def test_enrollment_gives_an_id_and_a_client_certificate_the_channel_accepts(
    manager: Manager, tmp_path: Path
) -> None:
    agent_id, directory = join(manager, tmp_path, "node-a")
    assert agent_id == "001"
    assert stat.S_IMODE((directory / "agent.key").stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((directory / "agent.pem").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "001"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "vigil-agent"
    cert.verify_directly_issued_by(manager.pki.ca_cert)
    record = manager.registry.get("node-a")
    assert record is not None and record.id == "001" and record.status == "active" and record.ip == "127.0.0.1"
    assert manager.registry.is_current("001", serial_of(directory))

    # The certificate opens a mutual-TLS connection to a server that requires client certificates.
    server_ctx = manager.pki.server_context(require_client_cert=True)
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[str] = []

    def accept() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
            seen.append(str(peer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value))

    thread = threading.Thread(target=accept)
    thread.start()
    ctx = client_context((directory / "ca.pem").read_bytes(), directory / "agent.pem", directory / "agent.key")
    with socket.create_connection(listener.getsockname()) as raw, ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
        pass
    thread.join(10)
    listener.close()
    assert seen == ["001"]


def test_a_recreated_agent_rejoins_under_its_id_and_its_old_certificate_dies(manager: Manager, tmp_path: Path) -> None:
    first_id, directory = join(manager, tmp_path, "node-a")
    old_serial = serial_of(directory)
    assert join(manager, tmp_path, "node-b")[0] == "002"
    again = enroll("127.0.0.1", manager.port, manager.pki.pin, "node-a", tmp_path / "fresh-volume", secret=SECRET)
    assert (again.agent_id, again.rejoined) == (first_id, True)
    assert not manager.registry.is_current(first_id, old_serial)
    assert manager.registry.is_current(first_id, serial_of(tmp_path / "fresh-volume"))
    record = manager.registry.get(first_id)
    assert record is not None and record.enrollments == 2
    assert [a.name for a in manager.registry.list()] == ["node-a", "node-b"]


def test_removed_agent_is_refused_at_once_and_may_enroll_again(manager: Manager, tmp_path: Path) -> None:
    agent_id, directory = join(manager, tmp_path, "node-a")
    assert manager.registry.remove(agent_id)
    assert not manager.registry.is_current(agent_id, serial_of(directory))
    record = manager.registry.get(agent_id)
    assert record is not None and record.status == "removed"
    assert not manager.registry.remove(agent_id)
    assert join(manager, tmp_path, "node-a")[0] == agent_id


def test_wrong_secret_is_refused_logged_and_the_listener_keeps_serving(
    manager: Manager, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), pytest.raises(EnrollmentError, match="wrong enrollment secret"):
        join(manager, tmp_path, "intruder", secret="guess")
    assert "enrollment refused for 127.0.0.1" in caplog.text
    assert manager.registry.get("intruder") is None
    assert join(manager, tmp_path, "node-a")[0] == "001"


def test_wrong_pin_stops_before_any_secret_is_sent(manager: Manager, tmp_path: Path) -> None:
    with pytest.raises(EnrollmentError, match="does not match the pin"):
        enroll("127.0.0.1", manager.port, "sha256:" + "0" * 64, "node-a", tmp_path / "a", secret=SECRET)
    assert (manager.server.enrolled, manager.server.refused) == (0, 0)
    assert not (tmp_path / "a").exists()


def test_one_time_tokens(manager: Manager, tmp_path: Path, clock: list[float]) -> None:
    token = manager.registry.add_token(None, ttl_seconds=600)
    assert join(manager, tmp_path, "node-a", token=token)[0] == "001"
    with pytest.raises(EnrollmentError, match="already used"):
        join(manager, tmp_path, "node-b", token=token)
    bound = manager.registry.add_token("node-c", ttl_seconds=600)
    with pytest.raises(EnrollmentError, match="is for agent 'node-c'"):
        join(manager, tmp_path, "node-b", token=bound)
    assert join(manager, tmp_path, "node-c", token=bound)[0] == "002"
    stale = manager.registry.add_token(None, ttl_seconds=60)
    clock[0] += 61
    with pytest.raises(EnrollmentError, match="expired"):
        join(manager, tmp_path, "node-d", token=stale)
    with pytest.raises(EnrollmentError, match="unknown enrollment token"):
        join(manager, tmp_path, "node-d", token="made-up")


def test_a_bad_request_does_not_spend_a_token(manager: Manager) -> None:
    token = manager.registry.add_token(None, ttl_seconds=600)
    request = {"op": "enroll", "name": "node-a", "csr": "not a csr", "token": token}
    answer = orjson.loads(raw_request(manager.port, orjson.dumps(request) + b"\n"))
    assert "not a PEM CSR" in answer["error"]
    manager.registry.use_token(token, "node-a")  # still unused


@pytest.mark.parametrize(("payload", "message"), [
    (b"{not json\n", "not one line of JSON"),
    (b"[1, 2]\n", "must be a JSON object"),
    (b'{"op": "steal"}\n', "unknown op"),
    (b'{"op": "enroll", "name": 7}\n', "needs 'name' and 'csr'"),
    (b'{"op": "enroll", "name": "../../etc", "csr": "x", "secret": "s3cret-enrollment"}\n', "not a PEM CSR"),
    (b"x" * (MAX_REQUEST_BYTES + 10) + b"\n", "larger than"),
])
def test_malformed_and_oversize_requests_get_a_clear_error(
    manager: Manager, tmp_path: Path, payload: bytes, message: str
) -> None:
    answer = orjson.loads(raw_request(manager.port, payload))
    assert message in answer["error"]
    assert join(manager, tmp_path, "node-a")[0] == "001"


def test_bad_agent_names_are_refused(manager: Manager, tmp_path: Path) -> None:
    for name in ("../../etc", "", "a" * 65, "with space"):
        with pytest.raises(EnrollmentError, match="agent names are"):
            enroll("127.0.0.1", manager.port, manager.pki.pin, name, tmp_path / "x", secret=SECRET)


def test_plaintext_and_old_tls_are_refused(manager: Manager, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        with socket.create_connection(("127.0.0.1", manager.port), timeout=10) as plain:
            plain.sendall(b'{"op": "ca"}\n')
            try:
                answer = plain.recv(65536)
            except ConnectionResetError:
                answer = b""
            assert b"BEGIN CERTIFICATE" not in answer
        tls12 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls12.check_hostname = False
        tls12.verify_mode = ssl.CERT_NONE
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(("127.0.0.1", manager.port), timeout=10) as raw, pytest.raises(ssl.SSLError):
            tls12.wrap_socket(raw)
        deadline = time.monotonic() + 5  # the listener logs from its own thread, maybe after the client gave up
        while manager.server.refused < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert caplog.text.count("TLS handshake with 127.0.0.1 failed") == 2
    assert join(manager, tmp_path, "node-a")[0] == "001"


def test_the_ca_survives_a_restart_and_the_pin_with_it(tmp_path: Path, clock: list[float]) -> None:
    first = Manager(tmp_path / "m", clock)
    pin = first.pki.pin
    first.close()
    second = Manager(tmp_path / "m", clock)
    try:
        assert second.pki.pin == pin
        assert fetch_ca("127.0.0.1", second.port, pin) == second.pki.ca_pem
        assert stat.S_IMODE((tmp_path / "m" / "pki" / "ca.key").stat().st_mode) == 0o600
    finally:
        second.close()
