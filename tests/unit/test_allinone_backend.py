"""`vigil up` as the API's Backend, and the Supervisor restarting one module on request."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from vigil.agent.runtime import Supervisor
from vigil.api.app import create_app
from vigil.api.backend import CommandFailed
from vigil.config import VigilConfig
from vigil.manager.runtime import AllInOne

from .api_support import client


class Looping:
    """A module that runs until told to stop, counting its runs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.runs = 0
        self.running = threading.Event()
        self.stop_seen: threading.Event | None = None

    def run(self, stop: threading.Event) -> None:
        self.runs += 1
        self.stop_seen = stop
        self.running.set()
        stop.wait()
        self.running.clear()

    def interrupt(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"runs": self.runs}


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_restart_runs_one_module_again_and_counts_it() -> None:
    first, second = Looping("first"), Looping("second")
    supervisor = Supervisor([first, second])  # type: ignore[list-item]
    supervisor.start()
    try:
        wait_until(lambda: first.running.is_set() and second.running.is_set())
        assert supervisor.restart("first") == 1
        wait_until(lambda: first.runs == 2 and first.running.is_set())
        assert second.runs == 1, "the other module keeps running"
        assert supervisor.status()["first"] == {"runs": 2, "restarts": 1}
        with pytest.raises(ValueError, match=r"no module named 'nope' \(modules here: first, second\)"):
            supervisor.restart("nope")
    finally:
        supervisor.stop(timeout=5)
    assert not first.running.is_set() and not second.running.is_set()


@pytest.fixture
def vigil_up(tmp_path: Path) -> Iterator[AllInOne]:
    cfg = VigilConfig.model_validate({"data_dir": str(tmp_path), "docker": {"enabled": False},
                                      "logs": {"enabled": False}, "agent": {"id": "000", "name": "box"}})
    runtime = AllInOne(cfg)
    yield runtime
    runtime.stop()


def test_the_local_agent(vigil_up: AllInOne) -> None:
    [agent] = vigil_up.list_agents()
    assert (agent["id"], agent["name"], agent["status"], agent["outbox_depth"]) == ("000", "box", "active", 0)
    assert [vigil_up.get_agent(key)["id"] for key in ("box", "000")] == ["000", "000"]  # type: ignore[index]
    assert vigil_up.get_agent("other") is None
    with pytest.raises(ValueError, match="cannot be removed"):
        vigil_up.remove_agent("000")
    assert vigil_up.remove_agent("other") is False


def test_commands_to_the_local_agent(vigil_up: AllInOne) -> None:
    answer = vigil_up.send_command("box", "ping", {}, 5)
    assert answer["pong"] is True and abs(answer["agent_time"] - time.time()) < 5
    with pytest.raises(CommandFailed, match="no module named 'docker'"):
        vigil_up.send_command("000", "restart-module", {"module": "docker"}, 5)
    with pytest.raises(LookupError):
        vigil_up.send_command("other", "ping", {}, 5)


def test_metrics_of_vigil_up_through_the_api(vigil_up: AllInOne, tmp_path: Path) -> None:
    app = create_app(vigil_up, vigil_up.config.api, tmp_path)
    key = (tmp_path / "api" / "admin.key").read_text().strip()
    text = client(app, key).get("/metrics").text
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"vigil_events_received", "vigil_alerts_raised", "vigil_duplicates_dropped", "vigil_decode_errors",
            "vigil_analysis_errors", "vigil_module_restarts"} <= names
    assert "vigil_events_received_total 0.0" in text
