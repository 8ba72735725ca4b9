"""The manager's writer process, for real: order, durability, a killed child, a clean close."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from vigil.errors import VigilError
from vigil.manager.outputs import checkpointer
from vigil.manager.outputs.store import AlertQuery, AlertReader, Columns, Store, alert_columns
from vigil.manager.outputs.writer import WriterError, WriterProcess

from .api_support import real_alerts


def bodies(alerts: list[dict[str, object]]) -> list[bytes]:
    return [orjson.dumps(a) for a in alerts]


def columns(alerts: list[dict[str, Any]]) -> list[Columns]:
    return [alert_columns(a) for a in alerts]


def json_ids(path: Path) -> list[str]:
    return [orjson.loads(line)["id"] for line in path.read_bytes().splitlines()]


def test_writes_land_in_order_in_the_store_and_alerts_json(tmp_path: Path) -> None:
    alerts = real_alerts()[:90]
    writer = WriterProcess(tmp_path / "vigil.db", tmp_path / "alerts.json")
    tickets = [writer.submit(columns(alerts[i:i + 30]), bodies(alerts[i:i + 30]), {"channel:001": {"seq": i + 30}})
               for i in range(0, 90, 30)]
    assert [t.wait() for t in tickets] == [30, 60, 90]
    writer.close()
    assert json_ids(tmp_path / "alerts.json") == [a["id"] for a in alerts]
    reader = AlertReader(tmp_path / "vigil.db")
    total, rows = reader.query(AlertQuery(limit=1000, newest_first=False))
    assert total == 90 and [a["id"] for _, a in rows] == [a["id"] for a in alerts]
    assert reader.get_state("channel:001") == {"seq": 90}


def test_close_stores_what_was_submitted_before_it(tmp_path: Path) -> None:
    alerts = real_alerts()[:200]
    writer = WriterProcess(tmp_path / "vigil.db", None)
    for i in range(0, 200, 10):
        writer.submit(columns(alerts[i:i + 10]), bodies(alerts[i:i + 10]), None)
    writer.close()
    store = Store(tmp_path / "vigil.db")
    assert store.last_seq() == 200
    store.close()


def test_a_killed_child_fails_its_writes_and_the_next_write_starts_a_new_one(tmp_path: Path) -> None:
    alerts = real_alerts()[:20]
    writer = WriterProcess(tmp_path / "vigil.db", tmp_path / "alerts.json")
    assert writer.submit(columns(alerts[:10]), bodies(alerts[:10]), None).wait() == 10
    os.kill(writer.pid, signal.SIGKILL)  # what an OOM kill would do
    failures = []
    deadline = time.monotonic() + 20
    while True:
        try:
            assert writer.submit(columns(alerts[10:]), bodies(alerts[10:]), None).wait() == 20
            break
        except WriterError as exc:  # a write that met the dead child is refused, never half-done
            failures.append(str(exc))
            assert time.monotonic() < deadline, failures
            time.sleep(0.05)
    assert writer.restarts == 1
    assert all("writer process" in f for f in failures)
    writer.close()
    assert json_ids(tmp_path / "alerts.json") == [a["id"] for a in alerts]


def test_a_store_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(VigilError, match="cannot open the alert store"):
        WriterProcess(blocker / "vigil.db", None)


def _columns_of(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT id, ts, level, rule_id, agent_id, description, agent_name, groups, body "
                            "FROM alerts ORDER BY seq").fetchall()


def test_the_writer_stores_the_same_rows_as_the_store_itself(tmp_path: Path) -> None:
    """Columns cross to the child as JSON: what lands must equal what `vigil up` writes in-process."""
    alerts = real_alerts()
    writer = WriterProcess(tmp_path / "child.db", None)
    writer.submit(columns(alerts), bodies(alerts), None).wait()
    writer.close()
    store = Store(tmp_path / "local.db")
    store.commit(alerts)
    store.close()
    assert _columns_of(tmp_path / "child.db") == _columns_of(tmp_path / "local.db")
    assert len(_columns_of(tmp_path / "local.db")) == len(alerts)


def test_a_request_that_does_not_add_up_fails_alone(tmp_path: Path) -> None:
    alerts = real_alerts()[:10]
    writer = WriterProcess(tmp_path / "vigil.db", tmp_path / "alerts.json")
    with pytest.raises(WriterError, match="9 alerts but 10 rows of columns"):
        writer.submit(columns(alerts), bodies(alerts)[:9], None).wait()
    assert writer.submit(columns(alerts), bodies(alerts), None).wait() == 10
    writer.close()
    assert json_ids(tmp_path / "alerts.json") == [a["id"] for a in alerts]


def test_the_log_is_checkpointed_and_restarted_beside_the_writes(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """With the checkpoint out of the commit, the log must still be copied back and start over."""
    monkeypatch.setattr(checkpointer, "INTERVAL_SECONDS", 0.01)
    monkeypatch.setattr(checkpointer, "RESTART_FRAMES", 64)
    alerts = real_alerts()
    store = Store(tmp_path / "vigil.db", background_checkpoints=True)
    assert store._checkpointer is not None
    deadline = time.monotonic() + 20
    written = 0
    while store._checkpointer.restarts < 3 and time.monotonic() < deadline:
        for alert in alerts:
            store.commit([{**alert, "id": f"{alert['id']}-{written}"}])
            written += 1
    store.close()
    assert store._checkpointer.restarts >= 3
    with sqlite3.connect(tmp_path / "vigil.db") as conn:
        assert conn.execute("SELECT count(*) FROM alerts").fetchone()[0] == written
    assert not (tmp_path / "vigil.db-wal").exists() or (tmp_path / "vigil.db-wal").stat().st_size < 64 * 1024 * 1024
