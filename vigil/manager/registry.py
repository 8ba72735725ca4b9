"""Enrolled agents and one-time enrollment tokens, in SQLite next to the manager's other state.

An agent is known by its name: a node whose agent is recreated (a DaemonSet pod replaced, a volume
lost) enrolls again under the same name and gets its old id back with a new certificate, and the old
certificate stops working. Wazuh refuses such a node as a duplicate on every pod restart.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vigil.certs import EnrollmentError, check_agent_name

SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    ip TEXT,
    status TEXT NOT NULL,
    cert_serial TEXT,
    enrolled_at REAL NOT NULL,
    enrollments INTEGER NOT NULL DEFAULT 1,
    last_seen REAL,
    version TEXT,
    os TEXT,
    modules TEXT,
    events_received INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS enrollment_tokens (
    digest TEXT PRIMARY KEY,
    name TEXT,
    expires REAL NOT NULL,
    used_at REAL
);
"""


@dataclass(frozen=True)
class AgentRecord:
    id: str
    name: str
    ip: str | None
    status: str
    cert_serial: str | None
    enrolled_at: float
    enrollments: int
    last_seen: float | None
    version: str | None
    os: str | None
    modules: str | None  # JSON list of module names
    events_received: int


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AgentRegistry:
    """Thread-safe; ids are `001`, `002`, ... (`000` is the manager's own local agent, as in Wazuh)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._clock = clock

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def enroll(self, name: str, ip: str | None, issue: Callable[[str], str]) -> tuple[str, bool]:
        """Register `name` (or take back its id) and record the serial `issue(agent_id)` returns.

        Returns (agent id, True when the name was already known). A removed agent may enroll
        again with a valid secret or token; its old certificate stays dead either way.
        """
        check_agent_name(name)
        with self._lock, self._db:
            row = self._db.execute("SELECT id FROM agents WHERE name = ?", (name,)).fetchone()
            known = row is not None
            if known:
                agent_id = row[0]
            else:
                last = self._db.execute("SELECT MAX(CAST(id AS INTEGER)) FROM agents").fetchone()[0] or 0
                agent_id = f"{last + 1:03d}"
            serial = issue(agent_id)
            now = self._clock()
            if known:
                self._db.execute(
                    "UPDATE agents SET ip = ?, status = 'active', cert_serial = ?, enrolled_at = ?, "
                    "enrollments = enrollments + 1 WHERE id = ?", (ip, serial, now, agent_id))
            else:
                self._db.execute(
                    "INSERT INTO agents (id, name, ip, status, cert_serial, enrolled_at) "
                    "VALUES (?, ?, ?, 'active', ?, ?)",
                    (agent_id, name, ip, serial, now))
        return agent_id, known

    def remove(self, agent_id: str) -> bool:
        """Revoke at once: the agent's certificate is no longer current, so its next frame is refused."""
        with self._lock, self._db:
            cur = self._db.execute(
                "UPDATE agents SET status = 'removed', cert_serial = NULL WHERE id = ? AND status != 'removed'",
                (agent_id,))
            return cur.rowcount > 0

    def is_current(self, agent_id: str, serial: str) -> bool:
        """True only for an active agent presenting the certificate it was last issued."""
        with self._lock:
            row = self._db.execute("SELECT status, cert_serial FROM agents WHERE id = ?", (agent_id,)).fetchone()
        return row is not None and row[0] == "active" and row[1] == serial

    def seen(self, agent_id: str, at: float, ip: str | None, version: str | None, os: str | None,
             modules: str | None, events_received: int) -> None:
        """What the agent last told about itself, kept for `vigil agents show` while it is away."""
        with self._lock, self._db:
            self._db.execute(
                "UPDATE agents SET last_seen = ?, ip = coalesce(?, ip), version = ?, os = ?, modules = ?, "
                "events_received = ? WHERE id = ?", (at, ip, version, os, modules, events_received, agent_id))

    def get(self, key: str) -> AgentRecord | None:
        """By id or by name."""
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM agents WHERE id = ? OR name = ?", (key, key)).fetchone()
        return AgentRecord(*row) if row else None

    def list(self) -> list[AgentRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM agents ORDER BY id").fetchall()
        return [AgentRecord(*row) for row in rows]

    def add_token(self, name: str | None, ttl_seconds: float) -> str:
        """A one-time enrollment token, optionally bound to one agent name; only its digest is stored."""
        token = secrets.token_urlsafe(24)
        with self._lock, self._db:
            self._db.execute("INSERT INTO enrollment_tokens (digest, name, expires) VALUES (?, ?, ?)",
                             (_digest(token), name, self._clock() + ttl_seconds))
        return token

    def use_token(self, token: str, name: str) -> None:
        """Spend a token for `name`, or raise saying why it cannot be used."""
        with self._lock, self._db:
            row = self._db.execute("SELECT name, expires, used_at FROM enrollment_tokens WHERE digest = ?",
                                   (_digest(token),)).fetchone()
            if row is None:
                raise EnrollmentError("unknown enrollment token")
            bound, expires, used_at = row
            if used_at is not None:
                raise EnrollmentError("this enrollment token was already used")
            if expires < self._clock():
                raise EnrollmentError("this enrollment token has expired")
            if bound is not None and bound != name:
                raise EnrollmentError(f"this enrollment token is for agent {bound!r}")
            self._db.execute("UPDATE enrollment_tokens SET used_at = ? WHERE digest = ?",
                             (self._clock(), _digest(token)))


_COLUMNS = ("id, name, ip, status, cert_serial, enrolled_at, enrollments, last_seen, version, os, modules, "
            "events_received")
