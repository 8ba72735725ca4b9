"""A syslog server in the agent (UDP and TCP, RFC 3164 and 5424, RFC 6587 framing), so other hosts and pods
can send it their logs.

One thread serves every socket without blocking, so a slow or idle TCP client holds up nobody, and puts
messages in a bounded queue; a writer thread takes them in batches to the sink, which commits durably and
may be slow. When the queue is full, a TCP client is no longer read until there is room (TCP then slows
the sender down: nothing is lost); a UDP message is dropped and counted, and once the queue has room again
the count goes through the sink as a `vigil` events_dropped event (rule 200003). Datagrams the kernel drops
because its buffer is full are counted (SO_RXQ_OVFL) and reported the same way.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import selectors
import socket
import struct
import threading
import time
from collections import Counter
from functools import partial
from typing import Any

from vigil.agent.modules.base import BatchSink
from vigil.agent.modules.logs.lines import line_event
from vigil.agent.modules.logs.syslog_framing import Message, datagram_message
from vigil.agent.modules.logs.syslog_sockets import SO_RXQ_OVFL, Client, Sockets, bind
from vigil.config import SyslogReceiverConfig
from vigil.event import AgentRef, Event

log = logging.getLogger(__name__)

BATCH_MESSAGES = 500
READS_PER_TURN = 256  # datagrams or connections taken from one socket before the others get their turn
RECV_BYTES = 64 * 1024
SELECT_SECONDS = 0.5
PAUSED_SELECT_SECONDS = 0.02  # how soon a paused TCP client is tried again
TAKE_SECONDS = 0.2
REPORT_SECONDS = 10.0  # during a long flood drops are reported this often; else as soon as the queue is empty
DRAIN_SECONDS = 5.0  # on stop, how long the messages still queued may take to be stored
_ANCILLARY_BYTES = socket.CMSG_SPACE(4)

Queued = tuple[bytes, int, str, float]  # message (at most the limit), its whole size, location, time received


class SyslogReceiver:
    """The syslog module: received messages become `syslog:<udp|tcp>:<peer ip>` events, decoded by the manager."""

    name = "syslog"

    def __init__(self, config: SyslogReceiverConfig, agent: AgentRef, sink: BatchSink, max_line_bytes: int) -> None:
        self.config = config
        self.agent = agent
        self.sink = sink
        self.limit = max_line_bytes
        self.counters = {"received": 0, "stored": 0, "dropped": 0, "dropped_reported": 0, "store_failed": 0,
                         "udp_kernel_dropped": 0, "truncated": 0, "framing_errors": 0, "clients": 0,
                         "tcp_connections": 0, "tcp_refused": 0, "tcp_paused": 0}
        self.ports: dict[str, int | None] = {"udp_port": None, "tcp_port": None}
        self.listening = False
        self.last_error: str | None = None
        # Kept across runs: what a run could not store in time is stored by the next one.
        self._queue: queue.Queue[Queued] = queue.Queue(config.queue_messages)
        self._lost: Counter[str] = Counter()  # losses not yet reported, by cause
        self._lock = threading.Lock()
        self._sockets: Sockets | None = None
        self._failure: BaseException | None = None
        self._store_error = ""  # why the last batch could not be stored, for the loss report

    def status(self) -> dict[str, Any]:
        with self._lock:
            counters = dict(self.counters)
        return {"host": self.config.host, "listening": self.listening, **self.ports, **counters,
                "queued": self._queue.qsize(), "queue_messages": self.config.queue_messages,
                "last_error": self.last_error}

    def interrupt(self) -> None:
        sockets = self._sockets
        if sockets is not None:
            with contextlib.suppress(OSError):
                sockets.wake_write.send(b"!")

    def run(self, stop: threading.Event) -> None:
        self._failure = None
        sockets = Sockets()
        done, failed = threading.Event(), threading.Event()
        writer = threading.Thread(target=self._write, args=(done, failed), name="syslog-writer", daemon=True)
        try:
            self._listen(sockets)
            self._sockets = sockets
            writer.start()
            self.listening = True
            self.last_error = None
            log.info("syslog receiver listening on %s (udp port %s, tcp port %s)", self.config.host,
                     self.ports["udp_port"], self.ports["tcp_port"])
            while not stop.is_set() and not failed.is_set():
                paused = [c for c in sockets.clients.values() if c.paused]
                for client in paused:
                    self._resume(sockets, client)
                for key, _events in sockets.selector.select(PAUSED_SELECT_SECONDS if paused else SELECT_SECONDS):
                    key.data()
        except Exception as exc:
            self.last_error = str(exc)
            raise
        finally:
            self.listening = False
            self._sockets = None
            for client in list(sockets.clients.values()):
                self._close_client(sockets, client)
            sockets.close()
            done.set()
            if writer.is_alive():
                writer.join()
        if self._failure is not None:
            self.last_error = f"storing messages failed: {self._failure}"
            raise self._failure

    # --- sockets (the serving thread) ---

    def _listen(self, sockets: Sockets) -> None:
        self.ports = {"udp_port": None, "tcp_port": None}
        for transport, port in (("udp", self.config.udp_port), ("tcp", self.config.tcp_port)):
            if port is None:
                continue
            sock = bind(self.config.host, transport, port)
            sockets.listeners.append(sock)
            self.ports[f"{transport}_port"] = sock.getsockname()[1]
            handler = partial(self._read_udp if transport == "udp" else self._accept, sockets, sock)
            sockets.selector.register(sock, selectors.EVENT_READ, handler)

    def _read_udp(self, sockets: Sockets, sock: socket.socket) -> None:
        for _ in range(READS_PER_TURN):
            try:
                datagram, ancillary, _flags, address = sock.recvmsg(65535, _ANCILLARY_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("syslog receiver: reading a datagram failed: %s", exc)
                return
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
                    total = struct.unpack("=I", value[:4])[0]
                    self._kernel_dropped((total - sockets.udp_overflows) % 2**32)
                    sockets.udp_overflows = total
            message = datagram_message(datagram, self.limit)
            if message is not None:
                self._enqueue(message, f"syslog:udp:{address[0]}")

    def _accept(self, sockets: Sockets, listener: socket.socket) -> None:
        for _ in range(READS_PER_TURN):
            try:
                conn, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, for one
                log.warning("syslog receiver: accepting a TCP connection failed: %s", exc)
                return
            if len(sockets.clients) >= self.config.max_tcp_clients:
                conn.close()
                refused = self._count("tcp_refused")
                if refused == 1 or refused % 1000 == 0:
                    log.warning("syslog receiver: refused a TCP connection from %s: already %d clients "
                                "(max_tcp_clients); %d refused so far", address[0], len(sockets.clients), refused)
                continue
            conn.setblocking(False)
            client = Client(conn, address[0], self.limit)
            sockets.clients[conn] = client
            sockets.selector.register(conn, selectors.EVENT_READ, partial(self._read_client, sockets, client))
            self._count("tcp_connections")
            self._count("clients")

    def _read_client(self, sockets: Sockets, client: Client) -> None:
        if self._queue.full():
            self._pause(sockets, client)
            return
        try:
            chunk = client.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close_client(sockets, client)
            return
        framer = client.framer
        errors = framer.framing_errors
        client.held.extend(framer.feed(chunk))
        if framer.framing_errors != errors:
            self._count("framing_errors", framer.framing_errors - errors)
        if not self._offer(client):
            self._pause(sockets, client)

    def _offer(self, client: Client) -> bool:
        """Queue the client's framed messages; False when the queue filled up before all were in."""
        held = client.held
        while held:
            try:
                self._queue.put_nowait(_queued(held[0], client.location))
            except queue.Full:
                return False
            self._received(held.popleft())
        return True

    def _pause(self, sockets: Sockets, client: Client) -> None:
        if not client.paused:
            client.paused = True
            sockets.selector.unregister(client.sock)
            self._count("tcp_paused")

    def _resume(self, sockets: Sockets, client: Client) -> None:
        if self._offer(client) and not self._queue.full():
            client.paused = False
            sockets.selector.register(client.sock, selectors.EVENT_READ, partial(self._read_client, sockets, client))

    def _close_client(self, sockets: Sockets, client: Client) -> None:
        rest = client.framer.flush()  # the sender stopped mid-message: keep what came
        if rest is not None:
            client.held.append(rest)
        while client.held:  # the run is ending (or the sender left): what does not fit now is counted
            self._enqueue(client.held.popleft(), client.location)
        if not client.paused:
            sockets.selector.unregister(client.sock)
        del sockets.clients[client.sock]
        client.sock.close()
        self._count("clients", -1)

    def _received(self, message: Message) -> None:
        with self._lock:
            self.counters["received"] += 1
            if message.cut:
                self.counters["truncated"] += 1

    def _enqueue(self, message: Message, location: str) -> None:
        """UDP: nothing can slow the sender down, so a message that finds the queue full is dropped and counted."""
        self._received(message)
        try:
            self._queue.put_nowait(_queued(message, location))
        except queue.Full:
            with self._lock:
                self.counters["dropped"] += 1
                first = not self._lost["queue_full"]
                self._lost["queue_full"] += 1
            if first:
                log.warning("syslog receiver: queue full (%d messages); new messages are dropped and counted "
                            "until it has room", self.config.queue_messages)

    def _kernel_dropped(self, count: int) -> None:
        if count:
            with self._lock:
                self.counters["udp_kernel_dropped"] += count
                self._lost["udp_kernel"] += count

    def _count(self, name: str, step: int = 1) -> int:
        with self._lock:
            self.counters[name] += step
            return self.counters[name]

    # --- the writer thread ---

    def _write(self, done: threading.Event, failed: threading.Event) -> None:
        """Stores batches until the run is done and the queue is empty (or DRAIN_SECONDS have passed)."""
        last_report = time.monotonic()
        deadline: float | None = None
        while True:
            batch = self._take()
            # A cut message (the framers keep only its start) is marked with its real size.
            if batch and not self._store([line_event(data, location, self.agent, self.limit, at, size=size)
                                          for data, size, location, at in batch], len(batch)):
                break
            now = time.monotonic()
            if self._lost and (self._queue.empty() or now - last_report >= REPORT_SECONDS or done.is_set()):
                if not self._report_losses():
                    break
                last_report = now
            if done.is_set():
                deadline = deadline or now + DRAIN_SECONDS
                if self._queue.empty():
                    return
                if now >= deadline:
                    log.warning("syslog receiver: %d received messages are still queued at stop; the next start "
                                "stores them", self._queue.qsize())
                    return
        failed.set()
        self.interrupt()  # the serving loop ends now, and the run raises the sink's error

    def _take(self) -> list[Queued]:
        try:
            batch = [self._queue.get(timeout=TAKE_SECONDS)]
        except queue.Empty:
            return []
        with contextlib.suppress(queue.Empty):
            while len(batch) < BATCH_MESSAGES:
                batch.append(self._queue.get_nowait())
        return batch

    def _store(self, events: list[Event], messages: int) -> bool:
        """Hands events to the sink; False when it failed (the run then ends with that error, to be restarted)."""
        try:
            self.sink(events, None)
        except Exception as exc:
            self._failure = exc
            self._store_error = str(exc) or type(exc).__name__
            with self._lock:
                self.counters["store_failed"] += messages
                self._lost["store_failed"] += messages
            return False
        self._count("stored", messages)
        return True

    def _report_losses(self) -> bool:
        with self._lock:
            lost = dict(self._lost)
            self._lost.clear()
        events = [self._loss_event(cause, count) for cause, count in lost.items()]
        try:
            self.sink(events, None)
        except Exception as exc:
            self._failure = exc
            with self._lock:
                self._lost.update(lost)  # reported by a later run
            return False
        self._count("dropped_reported", lost.get("queue_full", 0))
        for event in events:
            log.warning("syslog receiver: %d messages lost: %s", event.data["vigil"]["count"],
                        event.data["vigil"]["error"])
        return True

    def _loss_event(self, cause: str, count: int) -> Event:
        if cause == "queue_full":
            error = (f"the syslog receiver queue was full ({self.config.queue_messages} messages): messages "
                     "arrived faster than they could be stored")
        elif cause == "udp_kernel":
            error = "the kernel's UDP receive buffer for the syslog receiver was full"
        else:
            error = f"storing received syslog messages failed: {self._store_error}"
        return Event(module="vigil", location="syslog", timestamp=time.time(), decoder="vigil", agent=self.agent,
                     data={"vigil": {"module": self.name, "kind": "events_dropped", "count": count, "error": error}})


def _queued(message: Message, location: str) -> Queued:
    return message.data, message.size, location, time.time()
