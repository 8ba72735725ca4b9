"""The agent's durable outbox: events wait here (SQLite, WAL) until the manager says they are stored.

Each event gets a sequence number that only grows (AUTOINCREMENT, so numbers are never reused
after the rows are gone); the manager drops a replayed number. A `stream` id is made when the
outbox is created: an agent that lost its volume starts a new stream at 1, and the manager does
not mistake its events for replays. Module state (the Docker checkpoint) is written in the same
transaction as the event it follows, so a restart neither misses nor repeats.

The outbox is bounded: when full, new events are refused and counted (`dropped`, kept on disk);
the count goes to the manager as an event of its own once there is room again and the link is up.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from vigil.event import Event

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


@dataclass(frozen=True)
class Pending:
    first: int
    bodies: list[bytes]

    @property
    def last(self) -> int:
        return self.first + len(self.bodies) - 1


class Outbox:
    """Thread-safe: modules put from their threads, the uplink reads and acknowledges from its own."""

    def __init__(self, path: Path, max_events: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_events = max_events
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL survives the agent being killed (SIGKILL); FULL would also survive power loss at
        # one fsync per event.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self.has_events = threading.Event()
        stream = self._meta("stream")
        if stream is None:
            stream = secrets.token_hex(8)
            self._set_meta("stream", stream)
        self.stream: str = stream
        self.depth: int = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        self.dropped: int = self._meta("dropped") or 0  # not yet reported to the manager
        self.dropped_total: int = self._meta("dropped_total") or 0
        self.events_put = 0
        if self.depth:
            self.has_events.set()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _meta(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def _set_meta(self, key: str, value: Any) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                         "value = excluded.value", (key, orjson.dumps(value)))

    def state(self, key: str) -> Any:
        """A module's saved state (e.g. the Docker checkpoint)."""
        with self._lock:
            return self._meta(f"state:{key}")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One SQLite transaction (the connection is in autocommit mode otherwise); the lock must be held."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def save_state(self, state: dict[str, Any]) -> None:
        """Module state with no event (a starting checkpoint)."""
        with self._lock, self._transaction():
            for key, value in state.items():
                self._set_meta(f"state:{key}", value)

    def put(self, event: Event, state: dict[str, Any] | None = None) -> bool:
        """Keep one event (and the module's state after it) durably; False when the bound refused it."""
        body = orjson.dumps(event.to_dict())
        with self._lock:
            with self._transaction():
                kept = self.depth < self.max_events
                if kept:
                    self._db.execute("INSERT INTO events(body) VALUES (?)", (body,))
                else:
                    self._set_meta("dropped", self.dropped + 1)
                    self._set_meta("dropped_total", self.dropped_total + 1)
                for key, value in (state or {}).items():
                    self._set_meta(f"state:{key}", value)
            if kept:
                self.depth += 1
                self.events_put += 1
                self.has_events.set()
            else:
                if self.dropped == 0:
                    log.error("outbox full (%d events): new events are dropped and counted until the manager "
                              "takes some", self.max_events)
                self.dropped += 1
                self.dropped_total += 1
        return kept

    def put_many(self, events: list[Event], state: dict[str, Any] | None = None) -> int:
        """Keep a run of events and the module's state after them in one transaction; returns how many
        were kept (the rest, past the bound, are dropped and counted as `put` does)."""
        bodies = [orjson.dumps(event.to_dict()) for event in events]
        with self._lock:
            room = max(0, self.max_events - self.depth)
            kept, refused = bodies[:room], len(bodies) - min(room, len(bodies))
            with self._transaction():
                self._db.executemany("INSERT INTO events(body) VALUES (?)", ((b,) for b in kept))
                if refused:
                    self._set_meta("dropped", self.dropped + refused)
                    self._set_meta("dropped_total", self.dropped_total + refused)
                for key, value in (state or {}).items():
                    self._set_meta(f"state:{key}", value)
            self.depth += len(kept)
            self.events_put += len(kept)
            if kept:
                self.has_events.set()
            if refused:
                if self.dropped == 0:
                    log.error("outbox full (%d events): new events are dropped and counted until the manager "
                              "takes some", self.max_events)
                self.dropped += refused
                self.dropped_total += refused
        return len(kept)

    def pending(self, after: int, max_events: int, max_bytes: int) -> Pending | None:
        """Events after seq `after`, oldest first, up to the limits (at least one)."""
        with self._lock:
            rows = self._db.execute("SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (after, max_events)).fetchall()
        if not rows:
            return None
        bodies: list[bytes] = []
        size = 0
        expected = rows[0][0]
        for seq, body in rows:
            if seq != expected or (bodies and size + len(body) > max_bytes):
                break  # a batch is a run of consecutive numbers
            bodies.append(body)
            size += len(body)
            expected += 1
        return Pending(rows[0][0], bodies)

    def acknowledge(self, seq: int) -> None:
        """The manager has stored everything up to `seq`: forget it."""
        with self._lock:
            cur = self._db.execute("DELETE FROM events WHERE seq <= ?", (seq,))
            self.depth = max(0, self.depth - cur.rowcount)
            if self.depth == 0:
                self.has_events.clear()

    def report_drops(self, make_event: Any) -> int:
        """Turn the dropped count into an event in the outbox once there is room; returns the count reported."""
        with self._lock:
            count = self.dropped
            if count == 0 or self.depth >= self.max_events:
                return 0
            body = orjson.dumps(make_event(count).to_dict())
            with self._transaction():
                self._db.execute("INSERT INTO events(body) VALUES (?)", (body,))
                self._set_meta("dropped", 0)
            self.dropped = 0
            self.depth += 1
            self.has_events.set()
        log.warning("outbox: reported %d events dropped while it was full", count)
        return count
