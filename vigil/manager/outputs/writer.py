"""Durable outputs: the alert store first, then alerts.json, in this process or in a writer process.

The manager analyses in one process (correlation needs one view of the events) and would spend
half its time in SQLite. `WriterProcess` moves the store and alerts.json to a process of their own,
so the second core writes while the first analyses the next batch. Writes stay in the order they
were submitted, and a `Ticket` completes only once its alerts and state are committed: the channel
acknowledges a batch after that, never before.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import queue
import struct
import threading
from collections import deque
from pathlib import Path
from typing import Any, Protocol

import orjson

from vigil.errors import VigilError
from vigil.gcpolicy import settle_for_throughput
from vigil.manager.outputs.alerts_file import ALERTS_JSON_MARK, AlertsFile, recover_alerts_file
from vigil.manager.outputs.store import Columns, Row, Store, rows

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 60.0
QUEUE_BATCHES = 8
HEADER = struct.Struct(">I")  # length of the state's JSON in a request


class WriterError(VigilError):
    """The outputs could not be written; what was submitted may or may not be stored."""


class Ticket:
    def __init__(self) -> None:
        self._done = threading.Event()
        self._last: int | None = None
        self._error: str | None = None

    def finish(self, last: int | None, error: str | None = None) -> None:
        self._last, self._error = last, error
        self._done.set()

    def wait(self) -> int | None:
        """The last alert's sequence number once durable; raises WriterError if the write failed."""
        self._done.wait()
        if self._error is not None:
            raise WriterError(self._error)
        return self._last


class Outputs(Protocol):
    def submit(self, columns: list[Columns], bodies: list[bytes], state: dict[str, Any] | None) -> Ticket:
        """Store alerts (their `alert_columns` and JSON `bodies`) and `state` together; the ticket says when
        it is done."""

    def close(self) -> None: ...


class LocalOutputs:
    """The store, then alerts.json. The store's commit also records how far alerts.json had got, so a
    crash between the two is mended at the next start (recover_alerts_file), not written twice."""

    def __init__(self, store: Store | None, alerts_file: AlertsFile | None) -> None:
        self.store = store
        self.alerts_file = alerts_file
        self._json_mark: int | None = None

    def write(self, rows: list[Row], state: dict[str, Any] | None) -> int | None:
        last = None
        if self.store is not None and (rows or state):
            if self.alerts_file is not None and self._json_mark is not None:
                state = {**(state or {}), ALERTS_JSON_MARK: self._json_mark}
            last = self.store.commit_rows(rows, state)
        if self.alerts_file is not None:
            self.alerts_file.write_serialised([row[6] for row in rows])
            if last is not None:
                self._json_mark = last
        return last

    def submit(self, columns: list[Columns], bodies: list[bytes], state: dict[str, Any] | None) -> Ticket:
        ticket = Ticket()
        ticket.finish(self.write(rows(columns, bodies), state))
        return ticket

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        if self.alerts_file is not None:
            self.alerts_file.close()


def _writer_main(conn: multiprocessing.connection.Connection, db_path: str, alerts_json: str | None) -> None:
    """The writer process: one request at a time, answered in order; stops when the manager hangs up."""
    try:
        store = Store(Path(db_path), background_checkpoints=True)
        alerts_file = AlertsFile(Path(alerts_json)) if alerts_json else None
        if alerts_file is not None:
            recover_alerts_file(store, alerts_file)
        outputs = LocalOutputs(store, alerts_file)
    except Exception as exc:
        conn.send(("error", f"cannot open the alert store {db_path}: {type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    settle_for_throughput()  # each request makes thousands of objects that die once they are written
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):
            break
        if not request:  # the manager is stopping
            break
        try:
            conn.send(("ok", outputs.write(*decode_request(request))))
        except Exception as exc:  # told to the manager, which refuses to acknowledge the batch
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    outputs.close()


def encode_request(columns: list[Columns], bodies: list[bytes], state: dict[str, Any] | None) -> bytes:
    """What crosses to the writer: the state and each alert's `alert_columns` as JSON behind their
    length, then the alerts as alerts.json lines. Pickling whole rows cost the analysing process a
    tenth of its time; this is two C calls and a copy."""
    head = orjson.dumps([state, columns])
    return HEADER.pack(len(head)) + head + b"\n".join(bodies)


def decode_request(request: bytes) -> tuple[list[Row], dict[str, Any] | None]:
    (size,) = HEADER.unpack_from(request)
    state, columns = orjson.loads(request[HEADER.size:HEADER.size + size])
    lines = request[HEADER.size + size:]
    return rows(columns, lines.split(b"\n") if lines else []), state


class WriterProcess:
    """Outputs written by a child process (spawned, so it shares no locks or threads with this one).

    If the child dies, the writes waiting on it fail (their batches are not acknowledged, so agents
    send them again) and the next write starts a new child, which first mends alerts.json.
    """

    def __init__(self, db_path: Path, alerts_json: Path | None) -> None:
        self._args = (str(db_path), str(alerts_json) if alerts_json else None)
        self._lock = threading.Lock()
        self._order = threading.Lock()
        self._pending: deque[Ticket] = deque()
        self.restarts = 0
        self._broken: str | None = None
        self._closing = False
        # Sent by a thread of its own: the child reads the next request only when done with the last,
        # and a blocked send must not hold the analysis lock (the caller's) meanwhile.
        self._outbox: queue.Queue[tuple[Any, bytes] | None] = queue.Queue(maxsize=QUEUE_BATCHES)
        self._start()
        self._sender = threading.Thread(target=self._send_requests, name="vigil-writer-requests", daemon=True)
        self._sender.start()

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        conn, child = context.Pipe()
        process = context.Process(target=_writer_main, args=(child, *self._args), name="vigil-writer", daemon=True)
        process.start()
        child.close()
        if not conn.poll(START_TIMEOUT_SECONDS):
            process.kill()
            raise VigilError(f"the alert writer process did not start within {START_TIMEOUT_SECONDS:.0f} s")
        try:
            kind, detail = conn.recv()
        except EOFError:
            process.join(5)
            raise VigilError(f"the alert writer process exited as it started (exit code {process.exitcode})") from None
        if kind != "ready":
            process.join(5)
            raise VigilError(str(detail))
        self._conn, self._process, self._broken = conn, process, None
        self._reader = threading.Thread(target=self._read_answers, args=(conn, process), name="vigil-writer-answers",
                                        daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int | None:
        """The child's process id (for `vigil status` and for tests that kill it)."""
        return self._process.pid

    def submit(self, columns: list[Columns], bodies: list[bytes], state: dict[str, Any] | None) -> Ticket:
        """Queue a write. `_order` keeps tickets and requests in one order; `_lock` is not held while
        waiting for room in the queue, so answers can still be matched to tickets meanwhile."""
        ticket = Ticket()
        with self._order:
            with self._lock:
                if self._broken is not None:
                    try:
                        self._start()
                    except VigilError as exc:
                        ticket.finish(None, f"{self._broken}; restarting it failed: {exc}")
                        return ticket
                    self.restarts += 1
                    log.warning("alert writer process restarted (%d restarts)", self.restarts)
                self._pending.append(ticket)
                conn = self._conn
            self._outbox.put((conn, encode_request(columns, bodies, state)))  # blocks when QUEUE_BATCHES wait
        return ticket

    def _send_requests(self) -> None:
        while (item := self._outbox.get()) is not None:
            conn, request = item
            try:
                conn.send_bytes(request)
            except (OSError, ValueError) as exc:
                with self._lock:
                    if conn is self._conn and not self._closing:
                        self._fail(f"the alert writer process is gone ({exc})")

    def _read_answers(self, conn: multiprocessing.connection.Connection, process: Any) -> None:
        while True:
            try:
                kind, detail = conn.recv()
            except (EOFError, OSError):
                process.join(1)
                with self._lock:
                    if conn is self._conn and not self._closing:
                        self._fail(f"the alert writer process stopped (exit code {process.exitcode})")
                return
            with self._lock:
                ticket = self._pending.popleft()
            if kind == "ok":
                ticket.finish(detail)
            else:
                log.error("the alert writer could not store a batch: %s", detail)
                ticket.finish(None, str(detail))

    def _fail(self, reason: str) -> None:
        """With the lock held: every write waiting on this child fails; the next one starts a new child."""
        if self._broken is None:
            log.error("%s; the writes waiting on it are not acknowledged", reason)
        self._broken = reason
        while self._pending:
            self._pending.popleft().finish(None, reason)

    def close(self) -> None:
        """Let the child finish what it was given, then stop it."""
        with self._lock:
            self._closing = True
            self._broken = "the alert writer is closed"
            conn = self._conn
        self._outbox.put((conn, b""))  # behind everything already queued: the child stops after it
        self._outbox.put(None)  # and then the sender thread
        self._sender.join(30)
        self._process.join(30)
        if self._process.is_alive():
            log.error("the alert writer process did not stop within 30 s; killing it")
            self._process.kill()
        self._reader.join(5)
        self._conn.close()
