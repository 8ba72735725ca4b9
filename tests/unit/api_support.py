"""For the API tests: a small fake Backend, a store of real alerts (real events through the real Analyzer),
an app with an admin key, and a live uvicorn on 127.0.0.1 for what only a real server shows."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from vigil.api.app import create_app
from vigil.api.auth import ADMIN_KEY_FILE
from vigil.api.backend import CommandFailed, CommandTimedOut, Metric
from vigil.config import ApiConfig
from vigil.event import AgentRef
from vigil.manager.analysis.rule_loader import LoadedRules
from vigil.manager.outputs.store import Store

from .support import analyzer, docker_event, exec_event, read_jsonl, shipped_rules

AGENTS = (AgentRef("001", "web-1", "10.0.0.1"), AgentRef("002", "db-1", None))
Alert = dict[str, Any]


@functools.lru_cache(maxsize=1)
def _real_alerts() -> tuple[Alert, ...]:
    an = analyzer()
    out: list[Alert] = []
    for i, obj in enumerate(read_jsonl("session-raw.jsonl")):
        analysed = an.analyse(docker_event(obj, agent=AGENTS[i % 2]))
        if analysed.alert is not None:
            out.append(analysed.alert)
    for command in ("sh -c 'cat /etc/shadow'", "apk add curl"):
        alert = an.analyse(exec_event(command)).alert
        assert alert is not None
        out.append(alert)
    return tuple(out)


def real_alerts() -> list[Alert]:
    """Alerts from the recorded Docker session spread over agents 001 (web-1) and 002 (db-1), then two exec
    alerts from agent 001 under another name (host1), as after a rename."""
    return [dict(a) for a in _real_alerts()]


class FakeBackend:
    """What a running Vigil offers the API, with agents and commands a test controls."""

    def __init__(self, db_path: Path, rules: LoadedRules | None = None) -> None:
        self._db_path = db_path
        self._rules = rules or shipped_rules()
        self.agents: list[dict[str, Any]] = [
            {"id": "000", "name": "manager", "ip": None, "status": "active", "version": "0.1.0", "os": "Linux",
             "modules": {}, "last_seen": 1.0, "events_received": 5, "outbox_depth": 0, "enrolled_at": 1.0},
            {"id": "001", "name": "web-1", "ip": "10.0.0.1", "status": "active", "version": "0.1.0", "os": "Linux",
             "modules": {"docker": {}}, "last_seen": 2.0, "events_received": 10, "outbox_depth": 3,
             "enrolled_at": 1.0},
            {"id": "002", "name": "db-1", "ip": None, "status": "disconnected", "version": "0.1.0", "os": "Linux",
             "modules": {"docker": {}}, "last_seen": 1.5, "events_received": 7, "outbox_depth": 0,
             "enrolled_at": 1.0},
        ]
        self.commands: list[tuple[str, str, dict[str, Any], float]] = []
        self.removed: list[str] = []

    @property
    def rules(self) -> LoadedRules:
        return self._rules

    @property
    def db_path(self) -> Path:
        return self._db_path

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "version": "0.1.0", "agents": len(self.agents)}

    def list_agents(self) -> list[dict[str, Any]]:
        return [a for a in self.agents if a["id"] not in self.removed]

    def get_agent(self, key: str) -> dict[str, Any] | None:
        return next((a for a in self.list_agents() if key in (a["id"], a["name"])), None)

    def remove_agent(self, key: str) -> bool:
        agent = self.get_agent(key)
        if agent is None:
            return False
        if agent["id"] == "000":
            raise ValueError("the local agent of vigil up cannot be removed")
        self.removed.append(agent["id"])
        return True

    def send_command(self, key: str, op: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        agent = self.get_agent(key)
        if agent is None:
            raise LookupError(key)
        self.commands.append((agent["id"], op, args, timeout))
        if agent["status"] != "active":
            raise CommandTimedOut(f"no answer within {timeout} s")
        if op == "restart-module" and args["module"] not in agent["modules"]:
            raise CommandFailed(f"no module named {args['module']!r}")
        return {"pong": True} if op == "ping" else {"restarted": args["module"]}

    def metrics(self) -> list[Metric]:
        return [
            Metric("vigil_events_received_total", "Events received", "counter", [({}, 22)]),
            Metric("vigil_alerts_raised_total", "Alerts by level", "counter",
                   [({"level": "3"}, 4), ({"level": "12"}, 1)]),
            Metric("vigil_agent_outbox_depth", "Outbox depth", "gauge",
                   [({"agent": a["id"]}, a["outbox_depth"]) for a in self.agents]),
        ]


def filled_store(path: Path, alerts: list[Alert]) -> Path:
    store = Store(path)
    for start in range(0, len(alerts), 50):  # several transactions, as the pipeline writes them
        store.commit(alerts[start:start + 50], {"checkpoint": start})
    store.close()
    return path


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_app(tmp_path: Path, alerts: list[Alert] | None = None, clock: Callable[[], float] = time.time,
             **api: Any) -> tuple[FastAPI, FakeBackend, str]:
    """(app, backend, admin key) over a store holding `alerts`; `api` overrides ApiConfig options."""
    db = filled_store(tmp_path / "vigil.db", alerts if alerts is not None else [])
    backend = FakeBackend(db)
    settings = {"rate_per_second": 1000.0, "rate_burst": 1000, **api}
    app = create_app(backend, ApiConfig(**settings), tmp_path, clock=clock)
    key = (tmp_path / "api" / ADMIN_KEY_FILE).read_text().strip()
    return app, backend, key


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client(app: FastAPI, token: str | None = None) -> TestClient:
    return TestClient(app, headers=bearer(token) if token else {}, raise_server_exceptions=False)


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """The app on a real uvicorn at 127.0.0.1:<free port>; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
