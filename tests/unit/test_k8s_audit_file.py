"""The audit log file backend: JSON lines followed through lumberjack rotation and restarts, bad
and overlong lines reported (not one alert per line), repeats dropped."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from vigil.agent.modules.kubernetes.audit_file import AuditFileModule, state_key
from vigil.config_kubernetes import AuditFileConfig
from vigil.event import AgentRef, Event


def audit_line(n: int, stage: str = "ResponseComplete") -> str:
    return json.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": f"id-{n}", "stage": stage,
                       "verb": "get", "requestURI": f"/api/v1/namespaces/default/pods/p{n}",
                       "objectRef": {"resource": "pods", "namespace": "default", "name": f"p{n}"},
                       "user": {"username": "alice"}, "stageTimestamp": "2026-11-27T10:00:00.000000Z"}) + "\n"


class Store:
    """A durable store's behaviour: events and state committed together."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.state: dict[str, Any] = {}

    def sink(self, events: list[Event], state: dict[str, Any] | None) -> None:
        self.events.extend(events)
        self.state.update(state or {})

    def ids(self) -> list[str]:
        return [e.data["k8s"]["auditID"] for e in self.events if e.data.get("integration") == "k8s_audit"]

    def problems(self) -> list[dict[str, Any]]:
        return [e.data["vigil"] for e in self.events if e.decoder == "vigil"]


class Running:
    def __init__(self, store: Store, path: Path, **config: Any) -> None:
        self.module = AuditFileModule([AuditFileConfig(path=path, **config)], "lab", 1000, AgentRef(),
                                      store.sink, store.state.get, poll_seconds=0.02)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.module.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive()


def wait_until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_follows_the_file_and_makes_audit_events(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text(audit_line(0))
    store = Store()
    run = Running(store, path, start_at="beginning")
    try:
        wait_until(lambda: store.ids() == ["id-0"])
        with path.open("a") as f:
            f.write(audit_line(1) + audit_line(2))
        wait_until(lambda: store.ids() == ["id-0", "id-1", "id-2"])
    finally:
        run.close()
    event = store.events[-1]
    assert event.module == "kubernetes" and event.location == str(path)
    assert event.data["audit"]["source"] == "file" and event.data["audit"]["cluster"] == "lab"
    assert store.state[state_key(str(path))]


def test_start_at_end_skips_what_was_there_at_the_first_start(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text(audit_line(0))
    store = Store()
    run = Running(store, path)
    try:
        time.sleep(0.2)
        with path.open("a") as f:
            f.write(audit_line(1))
        wait_until(lambda: store.ids() == ["id-1"])
    finally:
        run.close()


def test_lumberjack_rotation_and_restart_lose_and_repeat_nothing(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text(audit_line(0) + audit_line(1))
    store = Store()
    run = Running(store, path, start_at="beginning")
    wait_until(lambda: len(store.ids()) == 2)
    with path.open("a") as f:  # rotated while running
        f.write(audit_line(2))
    os.rename(path, tmp_path / "audit-2026-11-27T10-00-00.000.log")
    path.write_text(audit_line(3))
    wait_until(lambda: len(store.ids()) == 4)
    run.close()
    # Down: more lines, then another rotation, then more lines in the new file.
    with path.open("a") as f:
        f.write(audit_line(4))
    os.rename(path, tmp_path / "audit-2026-11-27T11-00-00.000.log")
    path.write_text(audit_line(5))
    run = Running(store, path, start_at="beginning")  # a new process: same store, empty dedupe
    try:
        wait_until(lambda: len(store.ids()) >= 6)
        time.sleep(0.3)
    finally:
        run.close()
    assert store.ids() == [f"id-{n}" for n in range(6)]


def test_bad_and_overlong_lines_are_reported_once_and_the_rest_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    fixture = Path("/work/shared/fixtures/k8s-audit/falco-traces/fal_01_003.json").read_text().strip()
    big = json.dumps({"kind": "Event", "auditID": "big", "stage": "ResponseComplete", "pad": "x" * 5000})
    lines = [audit_line(0), "{not json\n", fixture + "\n", *["garbage\n"] * 200, big + "\n", audit_line(1)]
    path.write_text("".join(lines))
    store = Store()
    run = Running(store, path, start_at="beginning", max_line_bytes=4096)
    try:
        wait_until(lambda: store.ids() == ["id-0", "id-1"])
    finally:
        run.close()
    problems = store.problems()
    [malformed] = [p for p in problems if p["kind"] == "malformed_input"]
    assert malformed["count"] == 202 and "not valid JSON" in malformed["error"]
    [dropped] = [p for p in problems if p["kind"] == "events_dropped"]
    assert dropped["count"] == 1 and "longer than 4096 bytes" in dropped["error"]
    assert run.module.status()["malformed"] == 202


def test_a_repeated_line_is_stored_once(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text(audit_line(0) + audit_line(0) + audit_line(0, "RequestReceived"))
    store = Store()
    run = Running(store, path, start_at="beginning")
    try:
        wait_until(lambda: len(store.ids()) == 2)
        time.sleep(0.1)
    finally:
        run.close()
    assert store.ids() == ["id-0", "id-0"] and run.module.status()["duplicates"] == 1
