"""Builds a running Vigil from its configuration: analysis, outputs, and (all-in-one) the local agent."""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any

from vigil import __version__
from vigil.agent.modules.base import Module
from vigil.agent.modules.docker.collector import CHECKPOINT_KEY, IMAGES_KEY, DockerModule, starting_state
from vigil.agent.modules.kubernetes.registry import kubernetes_modules
from vigil.agent.modules.logs.registry import log_modules
from vigil.agent.runtime import Supervisor
from vigil.api.backend import CommandFailed, Metric
from vigil.config import VigilConfig
from vigil.event import AgentRef
from vigil.gcpolicy import settle_for_throughput
from vigil.manager.core import AnalysisCore

log = logging.getLogger(__name__)


class AllInOne:
    """`vigil up`: the manager and a local agent in one process, on embedded defaults."""

    def __init__(self, config: VigilConfig) -> None:
        self.config = config
        self.core = AnalysisCore(config)
        self.started = self.core.started
        self.rules = self.core.rules
        assert self.core.store is not None  # in-process outputs: the Docker module's checkpoint is read here
        self.store = self.core.store
        self.pipeline = self.core.pipeline
        self.agent = AgentRef(config.agent.id, config.agent.name, config.agent.ip)
        modules: list[Module] = []
        if config.docker.enabled:
            saved = {key: self.store.get_state(key) for key in (CHECKPOINT_KEY, IMAGES_KEY)}
            if (initial := starting_state(saved)) is not None:
                self.store.commit([], initial)
                saved.update(initial)
            modules.append(DockerModule(config.docker, self.agent, self.pipeline.process, saved))
        modules.extend(log_modules(config.logs, self.agent, self.pipeline.process_batch, self.store.get_state,
                                   config.kubernetes.http_logs))
        modules.extend(kubernetes_modules(config, self.agent, self.pipeline.process_batch, self.store.get_state,
                                          config.data_dir))
        self.supervisor = Supervisor(modules)

    def start(self) -> None:
        settle_for_throughput()
        self.supervisor.start()
        self.core.start()

    def stop(self) -> None:
        self.supervisor.stop()
        self.core.stop()

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "version": __version__, **self.core.health(), "modules": self.supervisor.status()}

    # --- Backend for the API ---
    @property
    def db_path(self) -> Path:
        return self.config.db_path

    def list_agents(self) -> list[dict[str, Any]]:
        """The one local agent: it runs in this process, so it is active while the API answers."""
        return [{
            "id": self.agent.id, "name": self.agent.name, "ip": self.agent.ip, "status": "active",
            "version": __version__, "os": platform.platform(), "modules": self.supervisor.status(),
            "last_seen": time.time(), "events_received": self.pipeline.stats.events, "outbox_depth": 0,
            "enrolled_at": self.started,
        }]

    def get_agent(self, key: str) -> dict[str, Any] | None:
        return next((a for a in self.list_agents() if key in (a["id"], a["name"])), None)

    def remove_agent(self, key: str) -> bool:
        if self.get_agent(key) is not None:
            raise ValueError("the local agent of vigil up cannot be removed")
        return False

    def send_command(self, key: str, op: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self.get_agent(key) is None:
            raise LookupError(key)
        if op == "ping":
            return {"pong": True, "agent_time": time.time()}
        if op == "restart-module":
            try:
                restarts = self.supervisor.restart(str(args.get("module", "")))
            except ValueError as exc:
                raise CommandFailed(str(exc)) from None
            return {"restarted": args["module"], "restarts": restarts}
        raise CommandFailed(f"unknown command {op!r} (the local agent knows ping and restart-module)")

    def metrics(self) -> list[Metric]:
        restarts = self.supervisor.restarts
        return [
            *self.core.metrics(),
            Metric("vigil_duplicates_dropped_total", "Replayed agent events dropped as duplicates", "counter",
                   [({}, 0)]),
            Metric("vigil_module_restarts_total", "Module restarts (after a failure or on request)", "counter",
                   [({"agent": self.agent.id, "module": name}, n) for name, n in sorted(restarts.items())]),
            Metric("vigil_agent_outbox_depth", "Events waiting in an agent's outbox", "gauge",
                   [({"agent": self.agent.id}, 0)]),
        ]
