"""alerts.json after a crash: the alerts a store commit holds but the file missed are written once."""

from __future__ import annotations

from pathlib import Path

import orjson

from vigil.manager.analysis.folding import Folder
from vigil.manager.outputs.alerts_file import AlertsFile, recover_alerts_file
from vigil.manager.outputs.store import Store
from vigil.manager.pipeline import DEFAULT_FOLD_IGNORE, Pipeline

from .support import analyzer, exec_event


def file_ids(path: Path) -> list[str]:
    return [orjson.loads(line)["id"] for line in path.read_bytes().splitlines()]


def setup(tmp_path: Path) -> tuple[Store, AlertsFile, Pipeline]:
    store = Store(tmp_path / "vigil.db")
    alerts = AlertsFile(tmp_path / "alerts.json")
    recover_alerts_file(store, alerts)  # as `vigil up` does at start
    pipeline = Pipeline(analyzer(), Folder(0, DEFAULT_FOLD_IGNORE), store, alerts)
    return store, alerts, pipeline


def test_stored_but_unwritten_alerts_are_written_once_at_start(tmp_path: Path) -> None:
    store, alerts, pipeline = setup(tmp_path)
    for command in ("id", "ls", "uname"):
        pipeline.process(exec_event(command))
    assert len(file_ids(alerts.path)) == 3
    # A crash after the store's commit and before the file write: the store has two more alerts.
    lost = [pipeline.analyzer.analyse(exec_event(c)).alert for c in ("whoami", "ps")]
    store.commit([a for a in lost if a is not None], {})
    assert recover_alerts_file(store, alerts) == 2
    ids = file_ids(alerts.path)
    assert len(ids) == 5 and len(set(ids)) == 5
    assert ids[-2:] == [a["id"] for a in lost if a is not None]
    assert recover_alerts_file(store, alerts) == 0
    assert len(file_ids(alerts.path)) == 5


def test_alerts_already_in_the_file_are_not_written_again(tmp_path: Path) -> None:
    store, alerts, pipeline = setup(tmp_path)
    for command in ("id", "ls", "uname"):
        pipeline.process(exec_event(command))
    # A crash right after the last file write: the store's mark lags one batch behind the file.
    assert recover_alerts_file(store, alerts) == 0
    assert len(file_ids(alerts.path)) == 3


def test_a_new_store_starts_with_nothing_to_recover(tmp_path: Path) -> None:
    store = Store(tmp_path / "vigil.db")
    alerts = AlertsFile(tmp_path / "alerts.json")
    assert recover_alerts_file(store, alerts) == 0
    assert alerts.path.read_bytes() == b""
