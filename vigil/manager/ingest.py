"""The agent channel on the manager (Wazuh's remoted, port 1514): mutual TLS 1.3, batches in, acks out.

Every connection must present a client certificate from the manager's CA whose serial is the one
the registry holds for that agent id (CN): a removed agent, or an old certificate of a re-enrolled
one, is refused. A batch is acknowledged only after its alerts and the agent's new position
(stream, last seq) are committed in one transaction; a replayed batch is dropped by seq number.
Refusals are answered with an `error` frame where possible, logged with the peer, and counted;
the listener keeps serving everyone else.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from vigil.errors import EventError
from vigil.event import AgentRef, Event
from vigil.manager.listener import ThreadedListener
from vigil.manager.outputs.writer import WriterError
from vigil.manager.registry import AgentRegistry
from vigil.manager.sessions import Session, Sessions
from vigil.wire import FrameError, FrameReader, send

log = logging.getLogger(__name__)

HANDSHAKE_SECONDS = 10.0
POLL_SECONDS = 0.2
PROGRESS_KEY = "channel:"
ANNOUNCE_PACKED_BATCHES = True  # the welcome tells agents they may send packed batches (wire.batch_frame)

# Stores a batch and the agent's new position in one transaction: process_batch(events, state).
BatchSink = Callable[[Iterable[Event], dict[str, Any]], Any]
StateReader = Callable[[str], Any]


class Refusal(Exception):
    """Ends a connection: the reason goes to the peer in an error frame and to the log."""


@dataclass(frozen=True)
class ChannelSettings:
    keepalive_seconds: float = 10.0
    max_frame_bytes: int = 8 * 1024 * 1024


class ChannelServer:
    def __init__(self, context: ssl.SSLContext, registry: AgentRegistry, sessions: Sessions, sink: BatchSink,
                 read_state: StateReader, settings: ChannelSettings) -> None:
        self.context = context
        self.registry = registry
        self.sessions = sessions
        self.sink = sink
        self.read_state = read_state
        self.settings = settings
        self.counters: Counter[str] = Counter()
        self._progress: dict[str, tuple[str, int]] = {}
        self._agent_locks: dict[str, threading.Lock] = {}
        self._connections: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._listener = ThreadedListener("vigil-channel", self._serve)

    def start(self, host: str, port: int) -> int:
        bound = self._listener.start(host, port)
        log.info("agent channel listening on %s:%d (TLS 1.3, client certificates required)", host, bound)
        return bound

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, tell every connection to close, and wait for them (a batch being stored finishes)."""
        self._listener.stop()
        for session in self.sessions.all():
            session.closing.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._connections)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _agent_lock(self, agent_id: str) -> threading.Lock:
        with self._lock:
            return self._agent_locks.setdefault(agent_id, threading.Lock())

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def _serve(self, raw: socket.socket, address: Any) -> None:
        with self._lock:
            self._connections.add(threading.current_thread())
        try:
            self._serve_one(raw, address)
        finally:
            with self._lock:
                self._connections.discard(threading.current_thread())

    def _serve_one(self, raw: socket.socket, address: Any) -> None:
        ip = address[0] if isinstance(address, tuple) else None
        raw.settimeout(HANDSHAKE_SECONDS)
        try:
            tls = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self._count("refused")
            log.warning("agent channel: TLS handshake with %s failed (%s)", ip,
                        getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or type(exc).__name__)
            raw.close()
            return
        with tls:
            session: Session | None = None
            reason = "closed"
            try:
                session, reader = self._open(tls, ip)
                reason = self._converse(tls, session, reader)
            except Refusal as exc:
                self._count("refused")
                who = f"agent {session.agent_id} ({session.name})" if session else "a peer"
                log.warning("agent channel: refused %s from %s: %s", who, ip, exc)
                reason = f"refused: {exc}"
                with contextlib.suppress(OSError, ssl.SSLError):
                    send(tls, {"t": "error", "error": str(exc)}, timeout=2)
            except (OSError, ssl.SSLError, EOFError) as exc:
                reason = f"connection lost ({type(exc).__name__})" if not isinstance(exc, EOFError) else "closed"
            except Exception as exc:  # a fault here ends this connection only; the agent resends what was not acked
                log.exception("agent channel: connection from %s failed", ip)
                reason = f"manager error ({type(exc).__name__})"
            finally:
                if session is not None:
                    self.sessions.detach(session, reason)

    def _open(self, tls: ssl.SSLSocket, ip: str | None) -> tuple[Session, FrameReader]:
        # The hello is read before any refusal, so the refusal is not lost to a reset over unread data.
        reader = FrameReader(tls, self.settings.max_frame_bytes)
        try:
            hello = reader.read_within(HANDSHAKE_SECONDS)
        except FrameError as exc:
            raise Refusal(str(exc)) from None
        if hello is None:
            raise Refusal(f"no hello within {HANDSHAKE_SECONDS:.0f} s")
        agent_id = _common_name(tls)
        record = self.registry.get(agent_id) if agent_id is not None else None
        if agent_id is None or record is None or not self.registry.is_current(agent_id, _serial(tls)):
            raise Refusal(f"the certificate of agent {agent_id} is not current (the agent was removed or enrolled "
                          "again since); enroll it again")
        stream = hello.get("stream")
        if hello["t"] != "hello" or not isinstance(stream, str) or not 0 < len(stream) <= 64:
            raise Refusal("the first message must be a hello with the outbox stream id")
        session = Session(agent_id=agent_id, name=record.name, ip=ip, stream=stream)
        session.update(hello)
        session.events_received = record.events_received
        acked = self._position(agent_id, stream)
        send(tls, {"t": "welcome", "agent_id": agent_id, "acked": acked,
                   "keepalive_seconds": self.settings.keepalive_seconds, "packed_batches": ANNOUNCE_PACKED_BATCHES})
        self.sessions.attach(session)
        self._remember(session)
        return session, reader

    def _position(self, agent_id: str, stream: str) -> int:
        with self._lock:
            known = self._progress.get(agent_id)
        if known is None:
            saved = self.read_state(PROGRESS_KEY + agent_id) or {}
            known = (str(saved.get("stream", "")), int(saved.get("seq", 0)))
            with self._lock:
                self._progress[agent_id] = known
        return known[1] if known[0] == stream else 0

    def _remember(self, session: Session) -> None:
        self.registry.seen(session.agent_id, session.last_seen, session.ip, session.version, session.os,
                           ",".join(session.modules), session.events_received)

    def _converse(self, tls: ssl.SSLSocket, session: Session, reader: FrameReader) -> str:
        agent = AgentRef(session.agent_id, session.name, session.ip)
        silence_limit = 3 * self.settings.keepalive_seconds
        last_rx = last_saved = time.monotonic()
        while not session.closing.is_set():
            while not session.outgoing.empty():
                send(tls, session.outgoing.get_nowait())
            try:
                message = reader.read(POLL_SECONDS)
            except FrameError as exc:
                raise Refusal(str(exc)) from None
            now = time.monotonic()
            if message is None:
                if now - last_rx > silence_limit:
                    return f"no keepalive for {now - last_rx:.0f} s"
                continue
            last_rx = now
            session.last_seen = time.time()
            kind = message["t"]
            if kind == "batch":
                self._batch(tls, session, agent, message)
            elif kind == "keepalive":
                session.update(message)
                send(tls, {"t": "alive"})
            elif kind == "result":
                session.resolve(message)
            else:
                raise Refusal(f"unexpected message type {kind!r}")
            if now - last_saved > self.settings.keepalive_seconds:
                self._remember(session)
                last_saved = now
        self._remember(session)
        if not self.registry.is_current(session.agent_id, _serial(tls)):
            return "removed"
        return "replaced by a newer connection" if session.replaced else "closed by the manager"

    def _batch(self, tls: ssl.SSLSocket, session: Session, agent: AgentRef, message: dict[str, Any]) -> None:
        first, raw_events, stream = message.get("first"), message.get("events"), message.get("stream")
        if not isinstance(first, int) or first < 1 or not isinstance(raw_events, list) or not raw_events:
            raise Refusal("a batch needs 'first' (a sequence number >= 1) and a non-empty 'events' list")
        if stream != session.stream:
            raise Refusal("the batch belongs to another outbox stream than this connection's hello")
        last = first + len(raw_events) - 1
        # Two connections of one agent can overlap for a moment (a reconnect while the old one has not
        # timed out yet): the check, the store and the new position must not interleave between them.
        with self._agent_lock(session.agent_id):
            acked = self._position(session.agent_id, session.stream)
            if last <= acked:
                self._count("duplicates_dropped", len(raw_events))
                send(tls, {"t": "ack", "seq": acked})
                return
            skip = max(0, acked + 1 - first)
            if skip:
                self._count("duplicates_dropped", skip)
            elif first > acked + 1:
                self._count("sequence_gaps")
                log.warning("agent %s: events %d..%d never arrived (the agent's outbox lost them)",
                            session.agent_id, acked + 1, first - 1)
            # Parsed one by one as the pipeline reaches them (see wire.batch_frame).
            events = (self._event(obj, session, agent) for obj in raw_events[skip:])
            try:
                self.sink(events, {PROGRESS_KEY + session.agent_id: {"stream": session.stream, "seq": last}})
            except WriterError as exc:
                with self._lock:  # stored or not, nobody knows: read the position again next time
                    self._progress.pop(session.agent_id, None)
                raise Refusal(f"the manager could not store the batch ({exc}); it will be sent again") from None
            received = len(raw_events) - skip
            with self._lock:
                self._progress[session.agent_id] = (session.stream, last)
                self.counters["events_received"] += received
        session.events_received += received
        send(tls, {"t": "ack", "seq": last})

    def _event(self, obj: Any, session: Session, agent: AgentRef) -> Event:
        """One envelope (parsed, or its JSON from a packed batch) as an Event; a malformed one becomes
        an event saying so, so it is seen and its sequence number still counts."""
        try:
            if isinstance(obj, bytes):
                obj = orjson.loads(obj)
            sender = obj.get("agent") if isinstance(obj, dict) else None
            claimed = sender.get("id") if isinstance(sender, dict) else None
            if claimed is not None and claimed != session.agent_id:
                raise Refusal(f"the batch holds an event of agent {claimed!r}, but this connection is agent "
                              f"{session.agent_id}")
            return Event.from_dict(obj, agent)
        except (EventError, orjson.JSONDecodeError) as exc:
            self._count("malformed_events")
            log.warning("agent %s sent a malformed event: %s", session.agent_id, exc)
            raw = obj.decode("utf-8", "replace") if isinstance(obj, bytes) else str(obj)
            return Event(module="vigil", location="channel", timestamp=time.time(), decoder="vigil",
                         data={"vigil": {"module": "channel", "kind": "malformed_input", "error": str(exc)}},
                         raw=raw[:512], agent=agent)


def _serial(tls: ssl.SSLSocket) -> str:
    """The peer certificate's serial as the registry writes it (lower-case hex)."""
    serial = (tls.getpeercert() or {}).get("serialNumber", "0")
    return format(int(serial, 16), "x") if isinstance(serial, str) else ""


def _common_name(tls: ssl.SSLSocket) -> str | None:
    """The peer certificate's CN: the agent id the manager put there when it signed it."""
    subject: Any = (tls.getpeercert() or {}).get("subject", ())
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName" and isinstance(value, str):
                return value
    return None

