"""SQLite store for alerts and module state; one transaction holds an event's alerts and its checkpoint."""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from vigil.alert import parse_wazuh_timestamp
from vigil.manager.outputs.checkpointer import WalCheckpointer

TABLES = """
CREATE TABLE IF NOT EXISTS alerts (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    ts REAL NOT NULL,
    level INTEGER NOT NULL,
    rule_id INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    description TEXT NOT NULL,
    body BLOB NOT NULL,
    agent_name TEXT NOT NULL DEFAULT '',
    groups TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"""
# Every index costs each stored alert several microseconds (BENCHMARKS.md, agent channel): these four
# serve the API's usual questions (recent, by level, by rule, by agent); names and groups are scanned.
# The integer key keeps rows in arrival order, and ids and times arrive almost in order, so inserts
# land at the right edge of each B-tree.
INDEXES = """
CREATE INDEX IF NOT EXISTS alerts_ts ON alerts(ts);
CREATE INDEX IF NOT EXISTS alerts_rule ON alerts(rule_id, ts);
CREATE INDEX IF NOT EXISTS alerts_level ON alerts(level, ts);
CREATE INDEX IF NOT EXISTS alerts_agent_id ON alerts(agent_id, ts);
DROP INDEX IF EXISTS alerts_agent_name;
"""
COLUMNS = "seq, id, ts, level, rule_id, agent_id, description, body, agent_name, groups"
INSERT = ("INSERT OR IGNORE INTO alerts(id, ts, level, rule_id, agent_id, description, body, agent_name, groups) "
          "VALUES (?,?,?,?,?,?,?,?,?)")
# `sort` values the API offers, as SQL: a leading '-' is descending; ties go by storage order.
SORT_COLUMNS = {"timestamp": "ts", "level": "level", "rule_id": "rule_id"}


# One alert as stored: id, ts, level, rule_id, agent_id, description, body (its JSON), agent_name, groups.
Row = tuple[str, float, int, int, str, str, bytes, str, str]


# What a row takes from the alert object: id, timestamp, level, rule id, agent id, description, agent name,
# groups. Only lookups, so the analysing process makes it cheaply; `row` does the rest (in the writer).
Columns = tuple[str, str, int, str, str, str, str, list[str]]


def alert_columns(alert: dict[str, Any]) -> Columns:
    rule, agent = alert["rule"], alert["agent"]
    return (alert["id"], alert["timestamp"], rule["level"], rule["id"], agent["id"], rule["description"],
            agent.get("name") or "", rule.get("groups") or [])


def row(columns: Sequence[Any], body: bytes) -> Row:
    """One alert as stored, from its `alert_columns` (possibly after a trip through JSON) and its JSON."""
    alert_id, timestamp, level, rule_id, agent_id, description, agent_name, groups = columns
    return (alert_id, _epoch(timestamp), level, int(rule_id), agent_id, description, body, str(agent_name),
            _groups_column(groups))


def rows(columns: Sequence[Sequence[Any]], bodies: Sequence[bytes]) -> list[Row]:
    """`row` for each alert; the two lists must be as long as each other."""
    if len(columns) != len(bodies):
        raise ValueError(f"{len(bodies)} alerts but {len(columns)} rows of columns")
    return [row(c, body) for c, body in zip(columns, bodies, strict=True)]


def alert_rows(alerts: Sequence[dict[str, Any]], bodies: Sequence[bytes] | None = None) -> list[Row]:
    """The row of each alert; `bodies` (the alerts as JSON) are made here unless given."""
    if bodies is None:
        bodies = [orjson.dumps(a) for a in alerts]
    return rows([alert_columns(a) for a in alerts], bodies)


@dataclass(frozen=True)
class AlertQuery:
    min_level: int | None = None
    max_level: int | None = None
    rule_ids: Sequence[int] = ()
    since: float | None = None
    until: float | None = None
    after_seq: int | None = None
    agents: Sequence[str] = ()  # agent ids or names; any of them
    groups: Sequence[str] = ()  # any of these in rule.groups
    text: str | None = None  # case-insensitive (ASCII) substring of the description or the alert JSON
    sort: str | None = None  # a SORT_COLUMNS key, '-' first for descending; None: storage order
    limit: int = 100
    offset: int = 0
    newest_first: bool = True  # storage order when `sort` is None


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    # 64 MiB of page cache keeps the index pages an insert touches in memory as the store grows, and
    # checkpointing every 40 MiB of WAL rather than 4 MiB writes each hot page back less often.
    # After a restart the log file is cut back to 64 MiB rather than keeping its longest size.
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA wal_autocheckpoint=10000")
    conn.execute("PRAGMA journal_size_limit=67108864")
    conn.executescript(TABLES)
    _migrate(conn)
    conn.executescript(INDEXES)
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    """Databases written by Vigil 0.1 (alert id as the key, no agent name or groups): rebuild them once.

    Row numbers are kept (they are the sequence numbers alerts.json recovery counts in)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(alerts)")}
    if "seq" in columns:
        return
    with conn:
        conn.execute("ALTER TABLE alerts RENAME TO alerts_v1")
        for name in ("alerts_ts", "alerts_rule", "alerts_level", "alerts_agent_id", "alerts_agent_name"):
            conn.execute(f"DROP INDEX IF EXISTS {name}")
        conn.executescript(TABLES)
        cursor = conn.execute("SELECT rowid, id, ts, level, rule_id, agent_id, description, body FROM alerts_v1")
        while batch := cursor.fetchmany(1000):
            rows = []
            for *fields, body in batch:
                alert = orjson.loads(body)
                rows.append((*fields, body, _agent_name(alert), _groups(alert)))
            conn.executemany(f"INSERT INTO alerts({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
        conn.execute("DROP TABLE alerts_v1")


class Store:
    """Durable alerts and key/value state. Writes are serialised; reads use their own connection."""

    def __init__(self, path: Path, background_checkpoints: bool = False) -> None:
        self.path = path
        self._conn = connect(path)
        self._lock = threading.Lock()
        self._checkpointer: WalCheckpointer | None = None
        if background_checkpoints:
            self._conn.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = WalCheckpointer(path)
            self._checkpointer.start()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._lock:
            self._conn.close()

    def commit(self, alerts: Sequence[dict[str, Any]], state: dict[str, Any] | None = None,
               bodies: Sequence[bytes] | None = None) -> int | None:
        """Store alerts and state updates atomically: a checkpoint never runs ahead of its alerts.

        `bodies` are the alerts already serialised, when the caller has them. Returns the sequence
        number of the last alert stored, or None when there was none.
        """
        return self.commit_rows(alert_rows(alerts, bodies), state)

    def commit_rows(self, rows: Sequence[Row], state: dict[str, Any] | None = None) -> int | None:
        """`commit` for rows made by `alert_rows` (possibly in another process)."""
        last: int | None = None
        with self._lock, self._conn:
            if rows:
                self._conn.executemany(INSERT, rows)
                last = self._conn.execute("SELECT max(seq) FROM alerts").fetchone()[0]
            for key, value in (state or {}).items():
                self._conn.execute(
                    "INSERT INTO state(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (key, orjson.dumps(value)),
                )
        return last

    def alerts_after(self, seq: int) -> list[tuple[int, dict[str, Any]]]:
        """Alerts stored after sequence number `seq`, oldest first."""
        with self._lock:
            query = "SELECT rowid, body FROM alerts WHERE rowid > ? ORDER BY rowid"
            rows = self._conn.execute(query, (seq,)).fetchall()
        return [(rowid, orjson.loads(body)) for rowid, body in rows]

    def last_seq(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT coalesce(max(rowid), 0) FROM alerts").fetchone()[0])

    def get_state(self, key: str) -> Any:
        with self._lock:
            return _read_state(self._conn, key)


class AlertReader:
    """Read side for the API and the CLI; safe to use while `vigil up` writes (WAL)."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=30)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def query(self, q: AlertQuery) -> tuple[int, list[tuple[int, dict[str, Any]]]]:
        """(total matching, [(sequence number, alert)]) for one page."""
        where, args = _where(q)
        order = _order_by(q)
        with self._lock:
            total = self._conn.execute(f"SELECT COUNT(*) FROM alerts {where}", args).fetchone()[0]
            rows = self._conn.execute(
                f"SELECT rowid, body FROM alerts {where} ORDER BY {order} LIMIT ? OFFSET ?",
                [*args, q.limit, q.offset],
            ).fetchall()
        return total, [(seq, orjson.loads(body)) for seq, body in rows]

    def get(self, alert_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT body FROM alerts WHERE id=?", (alert_id,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    def get_state(self, key: str) -> Any:
        with self._lock:
            return _read_state(self._conn, key)


def _read_state(conn: sqlite3.Connection, key: str) -> Any:
    row = conn.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
    return orjson.loads(row[0]) if row else None


def _where(q: AlertQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if q.min_level is not None:
        clauses.append("level >= ?")
        args.append(q.min_level)
    if q.max_level is not None:
        clauses.append("level <= ?")
        args.append(q.max_level)
    if q.rule_ids:
        clauses.append(f"rule_id IN ({','.join('?' * len(q.rule_ids))})")
        args.extend(q.rule_ids)
    if q.since is not None:
        clauses.append("ts >= ?")
        args.append(q.since)
    if q.until is not None:
        clauses.append("ts < ?")
        args.append(q.until)
    if q.after_seq is not None:
        clauses.append("rowid > ?")
        args.append(q.after_seq)
    if q.agents:
        marks = ",".join("?" * len(q.agents))
        clauses.append(f"(agent_id IN ({marks}) OR agent_name IN ({marks}))")
        args.extend([*q.agents, *q.agents])
    if q.groups:
        clauses.append("(" + " OR ".join("instr(groups, ?) > 0" for _ in q.groups) + ")")
        args.extend(f",{g}," for g in q.groups)
    if q.text:
        # instr, not LIKE: the user's % and _ are plain characters.
        clauses.append("(instr(lower(description), ?) > 0 OR instr(lower(CAST(body AS TEXT)), ?) > 0)")
        args.extend([q.text.lower()] * 2)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args


def _order_by(q: AlertQuery) -> str:
    """ORDER BY for a query; only names from SORT_COLUMNS reach the SQL text."""
    if q.sort is None:
        return "rowid DESC" if q.newest_first else "rowid ASC"
    direction = "DESC" if q.sort.startswith("-") else "ASC"
    column = SORT_COLUMNS.get(q.sort.lstrip("-"))
    if column is None:
        raise ValueError(f"cannot sort by {q.sort!r}: use one of {', '.join(SORT_COLUMNS)} (with - for descending)")
    return f"{column} {direction}, rowid {direction}"


def _agent_name(alert: dict[str, Any]) -> str:
    agent = alert.get("agent")
    return str(agent.get("name") or "") if isinstance(agent, dict) else ""


def _groups(alert: dict[str, Any]) -> str:
    return _groups_column(alert.get("rule", {}).get("groups") or [])


def _groups_column(groups: Sequence[Any]) -> str:
    """`,g1,g2,`: the commas around each group let `instr` match whole groups only."""
    return _joined_groups(tuple(str(g) for g in groups)) if groups else ""


@functools.lru_cache(maxsize=1024)
def _joined_groups(groups: tuple[str, ...]) -> str:  # a rule's groups are the same on each of its alerts
    return "," + ",".join(groups) + ","


def _epoch(timestamp: str) -> float:
    """Seconds since the epoch of a Wazuh timestamp (`2020-09-04T02:24:20.266+0000` as Vigil writes it:
    the second looked up once, the milliseconds added), or of any ISO 8601 one."""
    second, dot, rest = timestamp.partition(".")
    if dot and len(rest) == 8 and rest.endswith("+0000") and rest[:3].isdigit():
        return _utc_second(second) + int(rest[:3]) / 1000
    try:  # fromisoformat reads `...+0000` on Python 3.11, 8x faster than strptime
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return parse_wazuh_timestamp(timestamp)


@functools.lru_cache(maxsize=4096)
def _utc_second(text: str) -> float:
    return datetime.fromisoformat(text + "+00:00").timestamp()
