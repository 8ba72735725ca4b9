"""The journal collector on real journal files, written by systemd-journal-remote and read by journalctl.

journald itself needs systemd as PID 1, which this machine does not run; journal files made by
systemd's own tool and followed by the real journalctl are what a node's /var/log/journal holds.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vigil.agent.modules.logs.journal import CURSOR_KEY, JournalModule
from vigil.config import LogsConfig
from vigil.event import AgentRef, Event

from ..unit.support import analyzer

REMOTE = next((p for p in ("/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote")
               if Path(p).exists()), None)
pytestmark = pytest.mark.skipif(REMOTE is None or shutil.which("journalctl") is None,
                                reason="needs journalctl and systemd-journal-remote (apt-get install "
                                       "systemd-journal-remote)")
BOOT = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")


def write_journal(folder: Path, name: str, entries: list[dict[str, str]]) -> None:
    """A journal file holding `entries`, of the running boot (journalctl --follow shows only that boot)."""
    export = "".join("".join(f"{k}={v}\n" for k, v in {"_BOOT_ID": BOOT, **entry}.items()) + "\n"
                     for entry in entries)
    assert REMOTE is not None
    subprocess.run([REMOTE, "-o", str(folder / f"{name}.journal"), "-"], input=export.encode(), check=True,
                   capture_output=True)


def sshd(pid: int, message: str) -> dict[str, str]:
    now = str(int(time.time() * 1e6))
    return {"__REALTIME_TIMESTAMP": now, "__MONOTONIC_TIMESTAMP": now, "_HOSTNAME": "node-1",
            "SYSLOG_IDENTIFIER": "sshd", "_PID": str(pid), "_SYSTEMD_UNIT": "ssh.service", "MESSAGE": message}


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.state: dict[str, Any] = {}

    def __call__(self, events: list[Event], state: dict[str, Any] | None) -> None:
        self.events.extend(events)
        self.state.update(state or {})


def wait(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_journal_entries_become_alerts_and_a_restart_resumes_at_the_cursor(tmp_path: Path) -> None:
    write_journal(tmp_path, "a", [sshd(1, "Server listening on 0.0.0.0 port 22.")])  # before the first start
    config = LogsConfig(journal="on", journal_path=tmp_path, files=[])
    sink = Sink()

    def run(until: Callable[[], bool]) -> None:
        module = JournalModule(config, AgentRef("001", "node-1"), sink, sink.state.get)
        stop = threading.Event()
        thread = threading.Thread(target=module.run, args=(stop,))
        thread.start()
        try:
            wait(lambda: module.status()["running"])
            time.sleep(0.5)  # journalctl is following
            until()
        finally:
            stop.set()
            module.interrupt()
            thread.join(10)
        assert not thread.is_alive()

    def first() -> None:
        write_journal(tmp_path, "b", [
            sshd(2, "Failed password for invalid user admin from 198.51.100.4 port 50022 ssh2"),
            {**sshd(3, "db ready"), "CONTAINER_ID_FULL": "ab" * 32, "CONTAINER_NAME": "db", "IMAGE_NAME": "postgres:16",
             "SYSLOG_IDENTIFIER": "postgres"}])
        wait(lambda: len(sink.events) == 2)

    run(first)
    failed, container = sink.events
    assert failed.raw is not None and failed.raw.endswith(
        "node-1 sshd[2]: Failed password for invalid user admin from 198.51.100.4 port 50022 ssh2")
    assert failed.location == "journald:ssh.service"
    assert container.data["container"] == {"id": "ab" * 32, "name": "db", "image": "postgres:16"}
    alert = analyzer().analyse(failed).alert
    assert alert is not None and alert["rule"]["id"] in {"5710", "5716"} and alert["data"]["srcip"] == "198.51.100.4"
    assert isinstance(sink.state.get(CURSOR_KEY), str)

    write_journal(tmp_path, "c", [sshd(4, "Accepted publickey for deploy from 198.51.100.5 port 40000 ssh2")])
    run(lambda: wait(lambda: len(sink.events) == 3))  # while down: read after the cursor, nothing twice
    time.sleep(0.3)
    assert [e.raw.split(": ", 1)[1] for e in sink.events if e.raw] == [
        "Failed password for invalid user admin from 198.51.100.4 port 50022 ssh2", "db ready",
        "Accepted publickey for deploy from 198.51.100.5 port 40000 ssh2"]
