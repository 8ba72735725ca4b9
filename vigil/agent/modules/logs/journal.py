"""The systemd journal, read through `journalctl -o json -f` from a saved cursor.

Each entry becomes a syslog-style line (`Nov 27 08:00:00 host sshd[812]: message`), so the same
decoders and rules apply as to /var/log/auth.log. Containers that log to journald (Docker's
`journald` log driver) are named from the entry's CONTAINER_* fields.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from vigil.agent.modules.base import BatchSink, StateReader
from vigil.agent.modules.logs.line_splitter import LineSplitter
from vigil.agent.modules.logs.lines import line_event
from vigil.config import LogsConfig
from vigil.errors import VigilError
from vigil.event import AgentRef, Event

log = logging.getLogger(__name__)

CURSOR_KEY = "logs.journal.cursor"
BATCH_WAIT = 0.1  # seconds: entries arriving together are stored together


def journal_wanted(config: LogsConfig) -> bool:
    if config.journal == "off":
        return False
    if config.journal == "on" or config.journal_path is not None:
        return True
    has_journal = Path("/run/systemd/journal").is_dir() or Path("/var/log/journal").is_dir()
    return has_journal and shutil.which("journalctl") is not None


def _text(value: Any) -> str:
    """journalctl writes a field that is not valid text as a list of byte values."""
    if isinstance(value, list) and all(isinstance(b, int) for b in value):
        return bytes(b & 0xFF for b in value).decode(errors="replace")
    return value if isinstance(value, str) else ""


def entry_event(entry: dict[str, Any], agent: AgentRef, limit: int) -> Event:
    """One journal entry as a syslog line, with the container it came from when there is one."""
    try:
        when = int(entry.get("__REALTIME_TIMESTAMP", "")) / 1_000_000
    except ValueError:
        when = time.time()
    stamp = datetime.fromtimestamp(when, UTC).strftime("%b %d %H:%M:%S")
    ident = _text(entry.get("SYSLOG_IDENTIFIER")) or _text(entry.get("_COMM")) or "journal"
    pid = _text(entry.get("SYSLOG_PID")) or _text(entry.get("_PID"))
    host = _text(entry.get("_HOSTNAME")) or agent.name
    head = f"{stamp} {host} {ident}[{pid}]: " if pid else f"{stamp} {host} {ident}: "
    meta: dict[str, Any] | None = None
    if entry.get("CONTAINER_ID_FULL") or entry.get("CONTAINER_ID"):
        container = {"id": _text(entry.get("CONTAINER_ID_FULL")) or _text(entry.get("CONTAINER_ID")),
                     "name": _text(entry.get("CONTAINER_NAME"))}
        if entry.get("IMAGE_NAME"):
            container["image"] = _text(entry.get("IMAGE_NAME"))
        meta = {"container": container}
    unit = _text(entry.get("_SYSTEMD_UNIT"))
    location = f"journald:{unit}" if unit else "journald"
    return line_event((head + _text(entry.get("MESSAGE"))).encode(), location, agent, limit, when, meta)


class JournalModule:
    name = "journal"

    def __init__(self, config: LogsConfig, agent: AgentRef, sink: BatchSink, read_state: StateReader) -> None:
        self.config = config
        self.agent = agent
        self.sink = sink
        self.read_state = read_state
        self.counters = {"entries": 0, "malformed": 0}
        self._proc: subprocess.Popen[bytes] | None = None
        self._resumed_at: str | None = None

    def status(self) -> dict[str, Any]:
        return {"running": self._proc is not None and self._proc.poll() is None, **self.counters}

    def interrupt(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def _command(self, cursor: str | None) -> list[str]:
        journalctl = shutil.which("journalctl")
        if journalctl is None:
            raise VigilError("journal collection is on but journalctl is not installed (apt-get install systemd)")
        command = [journalctl, "--output=json", "--follow", "--no-pager", "--all"]
        path = self.config.journal_path
        if path is not None:
            command.append(f"--file={path}" if path.is_file() else f"--directory={path}")
        # First start: from now on, as with files; afterwards, right after the last entry stored.
        command.append(f"--after-cursor={cursor}" if cursor is not None else "--lines=0")
        return command

    def run(self, stop: threading.Event) -> None:
        cursor = self.read_state(CURSOR_KEY)
        self._resumed_at = cursor if isinstance(cursor, str) else None
        proc = subprocess.Popen(self._command(self._resumed_at), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        self._proc = proc
        assert proc.stdout is not None
        # A journal entry's JSON is longer than its message: room for the fields around it.
        splitter = LineSplitter(self.config.max_line_bytes * 2 + 65536)
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        try:
            while not stop.is_set():
                if not selector.select(timeout=0.5):
                    continue
                chunk = os.read(proc.stdout.fileno(), 1 << 20)
                if not chunk:
                    break
                deadline = time.monotonic() + BATCH_WAIT
                while time.monotonic() < deadline and selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    more = os.read(proc.stdout.fileno(), 1 << 20)
                    if not more:
                        break
                    chunk += more
                self._store([line.data for line in splitter.feed(chunk)])
        finally:
            selector.close()
            self.interrupt()
            proc.wait(5)
            self._proc = None
        if not stop.is_set():
            error = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            raise VigilError(f"journalctl stopped ({proc.returncode}): {error[:500]}")

    def _store(self, lines: list[bytes]) -> None:
        events: list[Event] = []
        cursor: str | None = None
        for line in lines:
            try:
                entry = orjson.loads(line)
                if not isinstance(entry, dict):
                    raise ValueError("not an object")
            except ValueError as exc:  # kept as text, marked: nothing is dropped silently
                self.counters["malformed"] += 1
                events.append(line_event(line, "journald", self.agent, self.config.max_line_bytes, time.time(),
                                         {"log": {"format_error": f"not a journal entry: {exc}"}}))
                continue
            if self._resumed_at is not None and entry.get("__CURSOR") == self._resumed_at:
                continue  # journalctl may show the cursor's own entry again when files were merged
            events.append(entry_event(entry, self.agent, self.config.max_line_bytes))
            cursor = entry.get("__CURSOR") if isinstance(entry.get("__CURSOR"), str) else cursor
        if events or cursor:
            self.sink(events, {CURSOR_KEY: cursor} if cursor else None)
            self.counters["entries"] += len(events)
