"""The agent channel on real TLS 1.3 over loopback: a Manager in this process, agents as raw clients.

Each refusal case checks what a user would see: the peer is turned away (an error frame or a failed
handshake), the manager counts and logs it, stores nothing from it, and goes on serving a good agent.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from vigil.agent import uplink as uplink_module
from vigil.agent.enroll import enroll
from vigil.agent.outbox import Outbox
from vigil.agent.uplink import Uplink, UplinkSettings
from vigil.certs import key_pem, new_key, write_private
from vigil.config import VigilConfig
from vigil.event import AgentRef, Event
from vigil.manager import ingest
from vigil.manager.pki import ManagerPKI
from vigil.manager.service import Manager
from vigil.tls import client_context
from vigil.wire import HEADER, PACKED_BATCH, FrameReader, batch_frame, frame

from .support import docker_event, docker_obj

KEEPALIVE = 0.3


@pytest.fixture()
def manager(tmp_path: Path) -> Iterator[Manager]:
    cfg = VigilConfig.model_validate({
        "data_dir": str(tmp_path / "manager"),
        "manager": {"listen_host": "127.0.0.1", "channel_port": 0, "enrollment_port": 0,
                    "keepalive_seconds": KEEPALIVE, "max_frame_bytes": 65536,
                    "server_names": ["127.0.0.1"]},
        "analysis": {"fold_window_seconds": 0},
        "api": {"enabled": False},
    })
    m = Manager(cfg)
    m.start()
    yield m
    m.stop()


def join(manager: Manager, tmp_path: Path, name: str) -> Path:
    directory = tmp_path / "agents" / name
    secret = manager.config.enrollment_secret_path.read_text().strip()
    enroll("127.0.0.1", manager.ports["enrollment"], manager.pki.pin, name, directory, secret=secret)
    return directory


class RawAgent:
    """Speaks the channel by hand, so tests can send what a real agent never would."""

    def __init__(self, manager: Manager, identity: Path | None, context: ssl.SSLContext | None = None) -> None:
        if context is None:
            assert identity is not None
            context = client_context((identity / "ca.pem").read_bytes(), identity / "agent.pem",
                                     identity / "agent.key")
        raw = socket.create_connection(("127.0.0.1", manager.ports["channel"]), timeout=5)
        self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        self.reader = FrameReader(self.sock, 1 << 20)

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(frame(message))

    def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        message = self.reader.read_within(timeout)
        assert message is not None, "the manager did not answer"
        return message

    def hello(self, stream: str = "s1") -> dict[str, Any]:
        self.send({"t": "hello", "stream": stream, "name": "x", "version": "test", "os": "test", "modules": []})
        return self.receive()

    def batch(self, first: int, events: list[dict[str, Any]], stream: str = "s1") -> dict[str, Any]:
        """A batch as one JSON message, as agents before packed batches send it."""
        self.send({"t": "batch", "stream": stream, "first": first, "events": events})
        return self.receive()

    def packed(self, first: int, events: list[dict[str, Any] | bytes], stream: str = "s1") -> dict[str, Any]:
        """A packed batch, as `vigil agent` sends it; bytes go as they are."""
        bodies = [e if isinstance(e, bytes) else orjson.dumps(e) for e in events]
        self.sock.sendall(batch_frame(stream, first, bodies))
        return self.receive()

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.reader.read(0.2)
        except (EOFError, OSError):
            return True
        return False

    def close(self) -> None:
        self.sock.close()


def created(name: str, agent_id: str = "001") -> dict[str, Any]:
    """A container-create event (rule 87901) as an agent's outbox holds it."""
    event = docker_event(docker_obj("container", "create", {"name": name}, actor_id=name.ljust(64, "0")))
    body = event.to_dict()
    body["agent"] = {"id": agent_id, "name": "whoever"}
    return body


def alerts_for(manager: Manager, rule_id: int) -> list[dict[str, Any]]:
    lines = manager.config.alerts_json_path.read_bytes().splitlines()
    return [a for a in map(orjson.loads, lines) if a["rule"]["id"] == str(rule_id)]


def assert_still_serving(manager: Manager, identity: Path, name: str) -> None:
    agent = RawAgent(manager, identity)
    welcome = agent.hello(stream=f"check-{name}")
    assert welcome["t"] == "welcome"
    assert agent.batch(1, [created(name, welcome["agent_id"])], stream=f"check-{name}") == {"t": "ack", "seq": 1}
    agent.close()
    assert [a["data"]["docker"]["Actor"]["Attributes"]["name"] for a in alerts_for(manager, 87901)].count(name) == 1


def test_a_batch_is_acknowledged_once_stored_and_a_replay_stores_nothing(manager: Manager, tmp_path: Path) -> None:
    identity = join(manager, tmp_path, "node-1")
    agent = RawAgent(manager, identity)
    welcome = agent.hello()
    assert welcome["t"] == "welcome" and welcome["agent_id"] == "001" and welcome["acked"] == 0
    assert agent.batch(1, [created("c1"), created("c2"), created("c3")]) == {"t": "ack", "seq": 3}
    assert agent.batch(1, [created("c1"), created("c2"), created("c3")]) == {"t": "ack", "seq": 3}
    assert agent.batch(3, [created("c3"), created("c4")]) == {"t": "ack", "seq": 4}
    agent.close()
    alerts = alerts_for(manager, 87901)
    assert sorted(a["data"]["docker"]["Actor"]["Attributes"]["name"] for a in alerts) == ["c1", "c2", "c3", "c4"]
    # The manager names the agent from its certificate, whatever the event said.
    assert {(a["agent"]["id"], a["agent"]["name"]) for a in alerts} == {("001", "node-1")}
    assert manager.channel.counters["duplicates_dropped"] == 4
    again = RawAgent(manager, identity)
    assert again.hello()["acked"] == 4  # where to resume after a reconnect
    again.close()
    fresh = RawAgent(manager, identity)
    assert fresh.hello(stream="new-volume")["acked"] == 0  # a recreated outbox starts over, not as replays
    fresh.close()


def test_the_position_survives_a_manager_restart(manager: Manager, tmp_path: Path) -> None:
    identity = join(manager, tmp_path, "node-1")
    agent = RawAgent(manager, identity)
    agent.hello()
    agent.batch(1, [created("c1"), created("c2")])
    agent.close()
    manager.stop()
    cfg = manager.config.model_copy(deep=True)
    restarted = Manager(cfg)
    restarted.start()
    try:
        again = RawAgent(restarted, identity)
        assert again.hello()["acked"] == 2
        assert again.batch(1, [created("c1"), created("c2"), created("c3")]) == {"t": "ack", "seq": 3}
        again.close()
        names = [a["data"]["docker"]["Actor"]["Attributes"]["name"] for a in alerts_for(restarted, 87901)]
        assert sorted(names) == ["c1", "c2", "c3"]
    finally:
        restarted.stop()


def test_packed_batches_are_announced_stored_and_deduplicated(manager: Manager, tmp_path: Path) -> None:
    identity = join(manager, tmp_path, "node-1")
    agent = RawAgent(manager, identity)
    assert agent.hello()["packed_batches"] is True
    assert agent.packed(1, [created("p1"), created("p2"), created("p3")]) == {"t": "ack", "seq": 3}
    assert agent.packed(2, [created("p2"), created("p3"), created("p4")]) == {"t": "ack", "seq": 4}
    assert agent.batch(5, [created("j5")]) == {"t": "ack", "seq": 5}  # an older agent's JSON batch still works
    agent.close()
    names = sorted(a["data"]["docker"]["Actor"]["Attributes"]["name"] for a in alerts_for(manager, 87901))
    assert names == ["j5", "p1", "p2", "p3", "p4"]
    assert manager.channel.counters["duplicates_dropped"] == 2
    assert manager.channel.counters["events_received"] == 5


def test_a_broken_event_in_a_packed_batch_becomes_an_alert_and_the_rest_is_stored(
        manager: Manager, tmp_path: Path) -> None:
    identity = join(manager, tmp_path, "node-1")
    agent = RawAgent(manager, identity)
    agent.hello()
    answer = agent.packed(1, [created("before"), b'{"v":1,"id":"x","module":"docker",\xff', b"[1, 2]",
                              created("after")])
    assert answer == {"t": "ack", "seq": 4}  # each number counts: nothing is asked for again
    agent.close()
    names = sorted(a["data"]["docker"]["Actor"]["Attributes"]["name"] for a in alerts_for(manager, 87901))
    assert names == ["after", "before"]
    broken = alerts_for(manager, 200001)
    assert len(broken) == 2 and {a["agent"]["id"] for a in broken} == {"001"}
    assert "not valid" in broken[0]["data"]["vigil"]["error"] or "unexpected" in broken[0]["data"]["vigil"]["error"]
    assert broken[0]["full_log"].startswith('{"v":1,"id":"x"')
    assert "must be an object" in broken[1]["data"]["vigil"]["error"]
    assert manager.channel.counters["malformed_events"] == 2


@pytest.mark.parametrize("packed", [False, True], ids=["json", "packed"])
def test_a_batch_claiming_another_agent_is_refused_whole(manager: Manager, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture, packed: bool) -> None:
    identity = join(manager, tmp_path, "node-1")
    join(manager, tmp_path, "node-2")
    agent = RawAgent(manager, identity)
    agent.hello()
    send = agent.packed if packed else agent.batch
    with caplog.at_level(logging.WARNING):
        answer = send(1, [created("mine"), created("forged", agent_id="002")])
    assert answer["t"] == "error" and "agent '002'" in answer["error"]
    assert agent.closed_by_peer()
    assert alerts_for(manager, 87901) == []
    assert manager.channel.counters["refused"] == 1
    assert "refused agent 001" in caplog.text
    assert_still_serving(manager, identity, "after-forgery")


def _packed(head: bytes, rest: bytes) -> bytes:
    body = PACKED_BATCH + HEADER.pack(len(head)) + head + rest
    return HEADER.pack(len(body)) + body


@pytest.mark.parametrize(("payload", "reason"), [
    (struct.pack(">I", 10 * 1024 * 1024), "over the limit"),
    (struct.pack(">I", 9) + b"{not json", "not JSON"),
    (struct.pack(">I", 2) + b"[]", "message type"),
    (struct.pack(">I", 3) + PACKED_BATCH + b"\x00\x00", "too short"),
    (struct.pack(">I", 18) + PACKED_BATCH + HEADER.pack(100) + b'{"t":"batch"}', "shorter than its head"),
    (_packed(b'{"t":"hello","count":0}', b""), "head must be a batch"),
    (_packed(b'{"t":"batch","stream":"s1","first":1,"count":2}', HEADER.pack(2)), "list of event lengths"),
    (_packed(b'{"t":"batch","stream":"s1","first":1,"count":1}', HEADER.pack(50) + b"{}"), "its lengths say 50"),
    (_packed(b'{"t":"batch","stream":"s1","first":1,"count":1}', HEADER.pack(2) + b"{}{}"), "its lengths say 2"),
], ids=["oversize", "not-json", "not-object", "packed-short", "packed-cut-head", "packed-not-batch",
        "packed-cut-lengths", "packed-cut-event", "packed-trailing-bytes"])
def test_bad_frames_are_refused(manager: Manager, tmp_path: Path, payload: bytes, reason: str) -> None:
    identity = join(manager, tmp_path, "node-1")
    agent = RawAgent(manager, identity)
    agent.hello()
    agent.sock.sendall(payload)
    answer = agent.receive()
    assert answer["t"] == "error" and reason in answer["error"]
    assert agent.closed_by_peer()
    assert manager.channel.counters["refused"] == 1
    assert_still_serving(manager, identity, "after-bad-frame")


def test_plaintext_and_certificate_less_connections_fail_the_handshake(manager: Manager, tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    identity = join(manager, tmp_path, "node-1")
    with caplog.at_level(logging.WARNING), \
            socket.create_connection(("127.0.0.1", manager.ports["channel"]), timeout=5) as plain:
        plain.sendall(b'{"t": "hello"}\n')
        with contextlib.suppress(ConnectionResetError):  # reset, or closed without a word: turned away
            assert plain.recv(100) == b""
    no_cert = client_context((identity / "ca.pem").read_bytes())
    with pytest.raises((ssl.SSLError, OSError)):
        agent = RawAgent(manager, None, no_cert)
        agent.hello()
    deadline = time.monotonic() + 5
    while manager.channel.counters["refused"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert manager.channel.counters["refused"] == 2
    assert "TLS handshake with 127.0.0.1 failed" in caplog.text
    assert_still_serving(manager, identity, "after-handshakes")


def _certificate(tmp_path: Path, issuer: ManagerPKI, common_name: str, expired: bool) -> ssl.SSLContext:
    key = new_key()
    now = datetime.datetime.now(datetime.UTC)
    start, end = (now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)) if expired else \
        (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer.ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .sign(issuer.ca_key, hashes.SHA256())
    )
    directory = tmp_path / f"crafted-{common_name}-{expired}-{id(issuer)}"
    directory.mkdir(parents=True)
    write_private(directory / "agent.key", key_pem(key))
    (directory / "agent.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return client_context((tmp_path / "manager" / "pki" / "ca.pem").read_bytes(), directory / "agent.pem",
                          directory / "agent.key")


@pytest.mark.parametrize("case", ["forged", "expired"])
def test_forged_and_expired_certificates_are_refused(manager: Manager, tmp_path: Path, case: str) -> None:
    identity = join(manager, tmp_path, "node-1")
    if case == "forged":  # right CN, signed by a CA the manager never made
        context = _certificate(tmp_path, ManagerPKI.load_or_create(tmp_path / "rogue-pki", ["127.0.0.1"]), "001",
                               expired=False)
    else:  # signed by the manager's own CA, but out of date
        context = _certificate(tmp_path, manager.pki, "001", expired=True)
    with pytest.raises((ssl.SSLError, OSError, EOFError, AssertionError)):
        agent = RawAgent(manager, None, context)
        agent.hello()
    deadline = time.monotonic() + 5
    while manager.channel.counters["refused"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert manager.channel.counters["refused"] == 1
    assert alerts_for(manager, 87901) == []
    assert_still_serving(manager, identity, f"after-{case}")


def test_a_removed_agent_is_cut_off_at_once_and_refused_after(manager: Manager, tmp_path: Path) -> None:
    identity = join(manager, tmp_path, "node-1")
    other = join(manager, tmp_path, "node-2")
    agent = RawAgent(manager, identity)
    agent.hello()
    assert manager.remove_agent("node-1")
    assert agent.closed_by_peer(timeout=3)
    again = RawAgent(manager, identity)
    answer = again.hello()
    assert answer["t"] == "error" and "not current" in answer["error"]
    assert manager.get_agent("001")["status"] == "removed"  # type: ignore[index]
    assert [a["rule"]["id"] for a in alerts_for(manager, 505)] == ["505"]
    assert_still_serving(manager, other, "after-removal")


def test_an_old_certificate_stops_working_when_the_agent_enrolls_again(manager: Manager, tmp_path: Path) -> None:
    old = join(manager, tmp_path, "node-1")
    saved = tmp_path / "old-identity"
    saved.mkdir()
    for name in ("agent.pem", "agent.key", "ca.pem"):
        (saved / name).write_bytes((old / name).read_bytes())
    new = join(manager, tmp_path, "node-1")  # same name, new key: the pod was recreated
    answer = RawAgent(manager, saved).hello()
    assert answer["t"] == "error" and "not current" in answer["error"]
    assert RawAgent(manager, new).hello()["agent_id"] == "001"


def test_silence_longer_than_three_keepalives_is_a_disconnect(manager: Manager, tmp_path: Path) -> None:
    identity = join(manager, tmp_path, "node-1")
    agent = RawAgent(manager, identity)
    agent.hello()
    assert manager.get_agent("001")["status"] == "active"  # type: ignore[index]
    assert agent.closed_by_peer(timeout=3 * KEEPALIVE + 3)
    assert manager.get_agent("001")["status"] == "disconnected"  # type: ignore[index]
    disconnected = alerts_for(manager, 504)
    assert len(disconnected) == 1 and "no keepalive" in disconnected[0]["rule"]["description"]
    assert [a["agent"]["name"] for a in alerts_for(manager, 501)] == ["node-1"]


def test_a_command_goes_to_the_agent_and_its_answer_comes_back(manager: Manager, tmp_path: Path) -> None:
    identity = join(manager, tmp_path, "node-1")
    agent = RawAgent(manager, identity)
    agent.hello()
    answers: list[Any] = []
    caller = threading.Thread(target=lambda: answers.append(manager.send_command("node-1", "ping", {}, 5)))
    caller.start()
    command = agent.receive()
    assert command["t"] == "cmd" and command["op"] == "ping"
    agent.send({"t": "result", "id": command["id"], "ok": True, "result": {"pong": True}})
    caller.join(5)
    assert answers == [{"pong": True}]


@pytest.mark.parametrize("manager_packs", [True, False], ids=["packed", "older-manager"])
def test_the_agent_uplink_delivers_its_backlog_in_a_format_the_manager_reads(
        manager: Manager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, manager_packs: bool) -> None:
    packed: list[int] = []

    def packing(stream: str, first: int, bodies: list[bytes]) -> bytes:
        assert manager_packs, "the agent sent a packed batch to a manager that did not announce them"
        packed.append(first)
        return batch_frame(stream, first, bodies)

    monkeypatch.setattr(uplink_module, "batch_frame", packing)
    if not manager_packs:  # a manager from before packed batches: its welcome does not announce them
        monkeypatch.setattr(ingest, "ANNOUNCE_PACKED_BATCHES", False)
    identity = join(manager, tmp_path, "node-1")
    outbox = Outbox(tmp_path / "outbox.db", 10_000)
    for i in range(250):
        assert outbox.put(Event.from_dict(created(f"u{i}")), None)
    context = client_context((identity / "ca.pem").read_bytes(), identity / "agent.pem", identity / "agent.key")
    uplink = Uplink(UplinkSettings("127.0.0.1", manager.ports["channel"], batch_max_events=100), context, outbox,
                    AgentRef("001", "node-1"), lambda: {"name": "node-1", "version": "test", "os": "test",
                                                        "modules": []}, lambda op, args: {})
    stop = threading.Event()
    thread = threading.Thread(target=uplink.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while outbox.depth and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        uplink.interrupt()
        thread.join(10)
    assert outbox.depth == 0 and uplink.counters["batches_sent"] == 3
    assert packed == ([1, 101, 201] if manager_packs else [])
    names = [a["data"]["docker"]["Actor"]["Attributes"]["name"] for a in alerts_for(manager, 87901)]
    assert sorted(names) == sorted(f"u{i}" for i in range(250))
