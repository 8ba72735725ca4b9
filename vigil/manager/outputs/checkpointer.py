"""Copies the store's write-ahead log back into the database from a thread of its own.

SQLite's automatic checkpoint runs inside the commit that crosses the threshold, so the writer
stalls while tens of megabytes are copied and synced, and the batches behind it wait for their
acks. Here a thread does the copying (sqlite3 releases the GIL) without blocking the writer;
once the log is long, it asks for a restart, which waits only for the few frames written since
the last pass and lets the next commit start the log from its beginning again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 0.25
RESTART_FRAMES = 16_384  # 64 MiB of 4 KiB pages
BUSY_TIMEOUT_SECONDS = 5.0


class WalCheckpointer:
    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(str(path), check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vigil-wal-checkpoint", daemon=True)
        self.restarts = 0

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL_SECONDS):
            try:
                self.run_once()
            except sqlite3.Error as exc:  # the writer's own commits still work; the log just grows meanwhile
                log.warning("checkpointing the alert store's log failed: %s", exc)

    def run_once(self) -> None:
        _busy, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames >= RESTART_FRAMES and copied >= frames:
            self._conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            self.restarts += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self._conn.close()
