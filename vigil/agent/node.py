"""`vigil agent run`: the modules, the durable outbox and the uplink to the manager, in one process.

Modules hand every event to the outbox (with their checkpoint, in one transaction); the uplink
ships the outbox. The agent judges nothing: analysis is the manager's.
"""

from __future__ import annotations

import json
import logging
import platform
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil import __version__
from vigil.agent.modules.base import Module
from vigil.agent.modules.kubernetes.registry import kubernetes_modules
from vigil.agent.modules.logs.registry import log_modules
from vigil.agent.outbox import Outbox
from vigil.agent.runtime import Supervisor
from vigil.agent.uplink import Uplink, UplinkSettings
from vigil.config import VigilConfig
from vigil.errors import VigilError
from vigil.event import AgentRef
from vigil.tls import client_context

log = logging.getLogger(__name__)

IDENTITY_DIR = "identity"


@dataclass(frozen=True)
class StoredIdentity:
    agent_id: str
    name: str
    manager_host: str
    directory: Path


def load_identity(data_dir: Path) -> StoredIdentity:
    directory = data_dir / IDENTITY_DIR
    try:
        info = json.loads((directory / "identity.json").read_text())
        for name in ("agent.key", "agent.pem", "ca.pem"):
            if not (directory / name).is_file():
                raise FileNotFoundError(directory / name)
        host = str(info["manager"]).rsplit(":", 1)[0]
        return StoredIdentity(str(info["agent_id"]), str(info["name"]), host, directory)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VigilError(f"this agent is not enrolled ({directory} is missing or incomplete: {exc}); run "
                         "`vigil agent enroll --manager HOST --pin sha256:... --secret-file FILE` first") from None


def os_description() -> str:
    try:
        pretty = platform.freedesktop_os_release().get("PRETTY_NAME")
    except OSError:
        pretty = None
    return f"{pretty or platform.system()} ({platform.machine()}, kernel {platform.release()})"


class AgentNode:
    def __init__(self, config: VigilConfig, extra_modules: Callable[[Outbox, AgentRef], list[Module]] | None = None
                 ) -> None:
        self.config = config
        identity = load_identity(config.data_dir)
        self.identity = identity
        self.agent = AgentRef(identity.agent_id, identity.name, config.agent.ip)
        self.outbox = Outbox(config.data_dir / "outbox.db", config.agent.outbox_max_events)
        modules: list[Module] = []
        if config.docker.enabled:
            # Imported here: the Docker SDK is a fifth of an idle agent's memory, and not every node has Docker.
            from vigil.agent.modules.docker.collector import CHECKPOINT_KEY, IMAGES_KEY, DockerModule, starting_state

            saved = {key: self.outbox.state(key) for key in (CHECKPOINT_KEY, IMAGES_KEY)}
            if (initial := starting_state(saved)) is not None:
                self.outbox.save_state(initial)
                saved.update(initial)
            modules.append(DockerModule(config.docker, self.agent, self.outbox.put, saved))
        modules.extend(log_modules(config.logs, self.agent, self.outbox.put_many, self.outbox.state,
                                   config.kubernetes.http_logs))
        modules.extend(kubernetes_modules(config, self.agent, self.outbox.put_many, self.outbox.state,
                                          config.data_dir, cluster_wide=False))
        if extra_modules is not None:
            modules.extend(extra_modules(self.outbox, self.agent))
        self.supervisor = Supervisor(modules)
        a = config.agent
        settings = UplinkSettings(
            host=a.manager_host or identity.manager_host, port=a.manager_port, batch_max_events=a.batch_max_events,
            batch_max_bytes=a.batch_max_bytes, window_batches=a.window_batches,
            reconnect_min_seconds=a.reconnect_min_seconds, reconnect_max_seconds=a.reconnect_max_seconds,
        )
        d = identity.directory
        context = client_context((d / "ca.pem").read_bytes(), d / "agent.pem", d / "agent.key")
        self.uplink = Uplink(settings, context, self.outbox, self.agent, self._hello, self._command)
        self._uplink_thread = threading.Thread(target=self.uplink.run, args=(self.supervisor.stop_event,),
                                               name="uplink", daemon=True)
        self._os = os_description()

    def _hello(self) -> dict[str, Any]:
        return {"name": self.identity.name, "version": __version__, "os": self._os,
                "modules": [m.name for m in self.supervisor.modules]}

    def _command(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if op == "ping":
            return {"pong": True, "version": __version__}
        if op == "restart-module":
            name = args.get("module")
            if not isinstance(name, str):
                raise ValueError("restart-module needs args.module, the module's name")
            self.supervisor.restart(name)
            return {"restarted": name}
        if op == "status":
            return {"modules": self.supervisor.status(), "uplink": self.uplink.status()}
        raise ValueError(f"unknown command {op!r} (this agent knows ping, restart-module, status)")

    def start(self) -> None:
        self.supervisor.start()
        self._uplink_thread.start()

    def stop(self) -> None:
        self.supervisor.stop()
        self.uplink.interrupt()
        self._uplink_thread.join(10)
        self.outbox.close()

    def status(self) -> dict[str, Any]:
        return {"agent_id": self.agent.id, "name": self.agent.name, "uplink": self.uplink.status(),
                "modules": self.supervisor.status()}
