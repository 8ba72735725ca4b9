"""alerts.json: one alert per line, the file SIEM shippers (Filebeat, Fluent Bit) already read."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from vigil.manager.outputs.store import Store

log = logging.getLogger(__name__)

# State key: the store's sequence number up to which alerts.json is known to hold every alert.
ALERTS_JSON_MARK = "alerts_json.mark"
MAX_TAIL_BYTES = 64 * 1024 * 1024


class AlertsFile:
    """Appends each alert as one JSON line, written through at once so followers see it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._lock = threading.Lock()

    def write(self, alerts: list[dict[str, Any]]) -> None:
        self.write_serialised([orjson.dumps(a) for a in alerts])

    def write_serialised(self, bodies: list[bytes]) -> None:
        """Alerts already turned into JSON (the store was given the same bytes)."""
        if not bodies:
            return
        payload = b"\n".join(bodies) + b"\n"
        with self._lock:
            view = memoryview(payload)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)

    def tail_ids(self, lines: int) -> set[str]:
        """Alert ids in the last `lines` lines of the file (unreadable lines are skipped)."""
        with self.path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            start = max(0, size - MAX_TAIL_BYTES)
            chunk = 64 * 1024
            data = b""
            position = size
            while position > start and data.count(b"\n") <= lines:
                position = max(start, position - chunk)
                handle.seek(position)
                data = handle.read(size - position)
        ids = set()
        for line in data.splitlines()[-(lines + 1):]:
            try:
                ids.add(str(orjson.loads(line)["id"]))
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
        return ids


def recover_alerts_file(store: Store, alerts_file: AlertsFile) -> int:
    """Append the alerts a crash left in the store but not in alerts.json; returns how many."""
    mark = store.get_state(ALERTS_JSON_MARK)
    if not isinstance(mark, int):  # first start with this store: nothing can be missing yet
        store.commit([], {ALERTS_JSON_MARK: store.last_seq()})
        return 0
    pending = store.alerts_after(mark)
    if not pending:
        return 0
    present = alerts_file.tail_ids(len(pending))
    missing = [alert for _, alert in pending if alert["id"] not in present]
    alerts_file.write(missing)
    store.commit([], {ALERTS_JSON_MARK: pending[-1][0]})
    if missing:
        log.warning("alerts.json: wrote %d alert(s) that were stored but not yet written when Vigil stopped",
                    len(missing))
    return len(missing)
