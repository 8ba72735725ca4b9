"""alerts.json: one alert per line, the file SIEM shippers (Filebeat, Fluent Bit) already read."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import orjson


class AlertsFile:
    """Appends each alert as one JSON line, written through at once so followers see it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._lock = threading.Lock()

    def write(self, alerts: list[dict[str, Any]]) -> None:
        if not alerts:
            return
        payload = b"".join(orjson.dumps(a) + b"\n" for a in alerts)
        with self._lock:
            view = memoryview(payload)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)
