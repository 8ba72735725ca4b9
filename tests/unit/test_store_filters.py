"""The alert store's columns: filled on commit, and added to databases from before them."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from vigil.manager.outputs import store as store_module
from vigil.manager.outputs.store import AlertQuery, AlertReader, Store

from .api_support import real_alerts

OLD_SCHEMA = """
CREATE TABLE alerts (id TEXT PRIMARY KEY, ts REAL NOT NULL, level INTEGER NOT NULL, rule_id INTEGER NOT NULL,
    agent_id TEXT NOT NULL, description TEXT NOT NULL, body BLOB NOT NULL);
CREATE INDEX alerts_ts ON alerts(ts);
CREATE TABLE state (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


def old_database(path: Path, alerts: list[dict[str, object]]) -> None:
    """A vigil.db as Vigil wrote it before the agent-name and groups columns."""
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    with conn:
        conn.executemany("INSERT INTO alerts VALUES (?,?,?,?,?,?,?)", [
            (a["id"], float(i), a["rule"]["level"], int(a["rule"]["id"]), a["agent"]["id"],  # type: ignore[index]
             a["rule"]["description"], orjson.dumps(a)) for i, a in enumerate(alerts)  # type: ignore[index]
        ])
        conn.execute("INSERT INTO state VALUES ('docker.checkpoint', ?)", (orjson.dumps("1.2"),))
    conn.close()


def columns(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[1] for row in conn.execute("PRAGMA table_info(alerts)")}
    finally:
        conn.close()


def test_an_old_database_gains_and_fills_the_new_columns(tmp_path: Path) -> None:
    alerts = real_alerts()
    db = tmp_path / "vigil.db"
    old_database(db, alerts[:100])
    store = Store(db)
    assert {"seq", "agent_name", "groups"} <= columns(db)
    assert store.get_state("docker.checkpoint") == "1.2"
    assert store.commit(alerts[100:150]) == 150, "the sequence goes on after the old rows"
    store.close()
    reader = AlertReader(db)
    total, rows = reader.query(AlertQuery(agents=("db-1",), limit=1000, newest_first=False))
    assert [a["id"] for _, a in rows] == [a["id"] for a in alerts[:150] if a["agent"]["name"] == "db-1"]
    assert total == len(rows) > 0
    total, _ = reader.query(AlertQuery(groups=("container_created",)))
    assert total == sum("container_created" in a["rule"]["groups"] for a in alerts[:150])
    reader.close()
    Store(db).close()  # a second start has nothing to migrate


def test_commit_keeps_its_contract(tmp_path: Path) -> None:
    alerts = real_alerts()[:10]
    store = Store(tmp_path / "vigil.db")
    assert store.commit(alerts[:5], {"k": 1}) == 5
    assert store.commit(alerts[:5]) == 5, "the same alerts again are ignored"
    assert store.commit([], {"k": 2}) is None
    assert store.get_state("k") == 2
    assert [a["id"] for _, a in store.alerts_after(3)] == [a["id"] for a in alerts[3:5]]
    store.close()


@pytest.mark.parametrize("timestamp", [
    "2020-09-04T02:24:20.266+0000", "2026-11-27T05:00:01.000+0000", "2026-12-31T23:59:59.999+0000",
    "2020-09-04T02:24:20.266+0100", "2020-09-04T02:24:20+00:00", "1970-01-01T00:00:00.001+0000",
])
def test_stored_times_are_the_alert_timestamps(timestamp: str) -> None:
    assert store_module._epoch(timestamp) == pytest.approx(datetime.fromisoformat(timestamp).timestamp(), abs=1e-6)
