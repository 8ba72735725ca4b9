"""The agent's side of the channel: ships the outbox to the manager, forgets only what it acknowledged.

One thread owns the connection. It keeps up to `window` batches in flight, sends a keepalive when
it has been quiet, answers the manager's commands, and treats a manager silent for three keepalive
intervals as a cut link: it closes, reconnects with backoff, and sends again everything not yet
acknowledged (the manager drops what it already has, by sequence number).
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vigil.agent.outbox import Outbox
from vigil.errors import VigilError
from vigil.event import AgentRef, Event
from vigil.wire import FrameError, FrameReader, batch_frame, json_batch_frame, send

log = logging.getLogger(__name__)

CommandHandler = Callable[[str, dict[str, Any]], dict[str, Any]]
POLL_SECONDS = 0.05


class Refused(VigilError):
    """The manager refused this agent (removed, re-enrolled elsewhere, or a protocol error)."""


class LinkDead(VigilError):
    """No word from the manager for three keepalive intervals."""


@dataclass(frozen=True)
class UplinkSettings:
    host: str
    port: int
    batch_max_events: int = 2000
    batch_max_bytes: int = 1024 * 1024
    window_batches: int = 4
    reconnect_min_seconds: float = 0.5
    reconnect_max_seconds: float = 30.0
    max_frame_bytes: int = 8 * 1024 * 1024


class Uplink:
    def __init__(self, settings: UplinkSettings, context: ssl.SSLContext, outbox: Outbox, agent: AgentRef,
                 hello: Callable[[], dict[str, Any]], on_command: CommandHandler) -> None:
        self.settings = settings
        self.context = context
        self.outbox = outbox
        self.agent = agent
        self.hello = hello
        self.on_command = on_command
        self.connected = False
        self.counters = {"connections": 0, "events_sent": 0, "batches_sent": 0, "commands": 0, "refusals": 0}
        self.last_error: str | None = None
        self._sock: ssl.SSLSocket | None = None
        self._lock = threading.Lock()

    def status(self) -> dict[str, Any]:
        return {"manager": f"{self.settings.host}:{self.settings.port}", "connected": self.connected,
                "outbox_depth": self.outbox.depth, "dropped_total": self.outbox.dropped_total,
                "last_error": self.last_error, **self.counters}

    def run(self, stop: threading.Event) -> None:
        delay = self.settings.reconnect_min_seconds
        while not stop.is_set():
            started = time.monotonic()
            try:
                self._session(stop)
            except Refused as exc:
                self.counters["refusals"] += 1
                self.last_error = f"refused: {exc}"
                log.error("the manager at %s:%d refused this agent: %s", self.settings.host, self.settings.port, exc)
                delay = self.settings.reconnect_max_seconds
            except (OSError, ssl.SSLError, EOFError, FrameError, LinkDead) as exc:
                if stop.is_set():
                    break
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self.connected:
                    log.warning("link to the manager lost (%s); %d events wait in the outbox", self.last_error,
                                self.outbox.depth)
                else:
                    log.info("cannot reach the manager at %s:%d (%s)", self.settings.host, self.settings.port,
                             self.last_error)
            finally:
                self.connected = False
                self._close()
            if time.monotonic() - started > 10:
                delay = self.settings.reconnect_min_seconds
            stop.wait(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.settings.reconnect_max_seconds)

    def interrupt(self) -> None:
        self._close()

    def _close(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection((self.settings.host, self.settings.port), timeout=15)
        try:
            tls = self.context.wrap_socket(raw, server_hostname=self.settings.host)
        except BaseException:
            raw.close()
            raise
        with self._lock:
            self._sock = tls
        return tls

    def _session(self, stop: threading.Event) -> None:
        tls = self._connect()
        reader = FrameReader(tls, self.settings.max_frame_bytes)
        send(tls, {"t": "hello", "stream": self.outbox.stream, "outbox_depth": self.outbox.depth, **self.hello()})
        welcome = reader.read_within(15.0)
        if welcome is None:
            raise LinkDead("the manager did not answer the hello within 15 s")
        if welcome.get("t") != "welcome" or not isinstance(welcome.get("acked"), int):
            raise Refused(str(welcome.get("error") or f"unexpected answer {welcome.get('t')!r} to hello"))
        acked: int = welcome["acked"]
        keepalive = float(welcome.get("keepalive_seconds") or 10.0)
        make_batch = batch_frame if welcome.get("packed_batches") else json_batch_frame  # an older manager
        self.outbox.acknowledge(acked)
        self.connected = True
        self.counters["connections"] += 1
        self.last_error = None
        log.info("connected to the manager at %s:%d as agent %s; %d events to send", self.settings.host,
                 self.settings.port, welcome.get("agent_id"), self.outbox.depth)
        self._report_drops()
        sent_upto = acked
        inflight: deque[tuple[int, int]] = deque()  # (last seq, events) per batch in flight
        last_rx = last_keepalive = time.monotonic()
        while not stop.is_set():
            while len(inflight) < self.settings.window_batches:
                pending = self.outbox.pending(sent_upto, self.settings.batch_max_events, self.settings.batch_max_bytes)
                if pending is None:
                    break
                tls.settimeout(30)
                tls.sendall(make_batch(self.outbox.stream, pending.first, pending.bodies))
                sent_upto = pending.last
                inflight.append((pending.last, len(pending.bodies)))
                self.counters["batches_sent"] += 1
            now = time.monotonic()
            if now - last_keepalive >= keepalive:  # also while busy: it carries the status the manager shows
                send(tls, {"t": "keepalive", "outbox_depth": self.outbox.depth, "dropped": self.outbox.dropped_total,
                           "events_sent": self.counters["events_sent"], **self.hello()})
                last_keepalive = now
            if now - last_rx > 3 * keepalive:
                raise LinkDead(f"no word from the manager for {now - last_rx:.0f} s")
            message = reader.read(POLL_SECONDS)
            if message is None:
                continue
            last_rx = time.monotonic()
            kind = message["t"]
            if kind == "ack":
                seq = message.get("seq")
                if not isinstance(seq, int):
                    raise FrameError("ack without a sequence number")
                while inflight and inflight[0][0] <= seq:
                    self.counters["events_sent"] += inflight.popleft()[1]
                self.outbox.acknowledge(seq)
                if self.outbox.dropped:
                    self._report_drops()
            elif kind == "cmd":
                self._run_command(tls, message)
            elif kind == "error":
                raise Refused(str(message.get("error")))
            elif kind != "alive":
                log.warning("ignoring a message of unknown type %r from the manager", kind)

    def _run_command(self, tls: ssl.SSLSocket, message: dict[str, Any]) -> None:
        self.counters["commands"] += 1
        op, args, cid = message.get("op"), message.get("args") or {}, message.get("id")
        log.info("command %s from the manager: %s %s", cid, op, args)
        try:
            if not isinstance(op, str) or not isinstance(args, dict):
                raise ValueError("a command needs an 'op' string and 'args' object")
            answer: dict[str, Any] = {"t": "result", "id": cid, "ok": True, "result": self.on_command(op, args)}
        except Exception as exc:  # the answer carries the reason; the link stays up
            answer = {"t": "result", "id": cid, "ok": False, "error": str(exc) or type(exc).__name__}
        log.info("command %s %s: %s", cid, "done" if answer["ok"] else "failed", answer.get("result") or
                 answer.get("error"))
        send(tls, answer)

    def _report_drops(self) -> None:
        def event(count: int) -> Event:
            return Event(module="vigil", location="outbox", timestamp=time.time(), decoder="vigil", agent=self.agent,
                         data={"vigil": {"module": "outbox", "kind": "events_dropped", "count": count,
                                         "error": f"the agent's outbox was full ({self.outbox.max_events} events) "
                                                  "while the manager was out of reach"}})
        self.outbox.report_drops(event)

