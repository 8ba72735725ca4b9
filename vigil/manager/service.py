"""`vigil manager`: enrollment, the agent channel and analysis for every enrolled agent (DESIGN §1)."""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import Any

from vigil import __version__
from vigil.agent.modules.kubernetes.registry import kubernetes_modules
from vigil.agent.runtime import Supervisor
from vigil.api.backend import CommandTimedOut, Metric
from vigil.certs import write_private
from vigil.config import VigilConfig
from vigil.errors import VigilError
from vigil.event import AgentRef, Event
from vigil.gcpolicy import settle_for_throughput
from vigil.manager.analysis.rule_loader import LoadedRules
from vigil.manager.core import AnalysisCore
from vigil.manager.enrollment import EnrollmentServer
from vigil.manager.ingest import ChannelServer, ChannelSettings
from vigil.manager.outputs.writer import WriterError
from vigil.manager.pki import ManagerPKI
from vigil.manager.registry import AgentRecord, AgentRegistry
from vigil.manager.sessions import Session, Sessions

log = logging.getLogger(__name__)


def ensure_secret(path: Path) -> None:
    """The enrollment secret is made once, readable by the manager's user only."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, (secrets.token_urlsafe(24) + "\n").encode())
        log.info("made an enrollment secret in %s", path)


def read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError as exc:
        log.error("cannot read the enrollment secret %s: %s", path, exc)
        return None


class Manager:
    def __init__(self, config: VigilConfig) -> None:
        self.config = config
        self.core = AnalysisCore(config, writer_process=True)
        self.registry = AgentRegistry(config.data_dir / "agents.db")
        try:
            self.pki = ManagerPKI.load_or_create(config.data_dir / "pki", config.manager.server_names)
        except (OSError, ValueError) as exc:
            raise VigilError(f"cannot load or create the manager's certificates in {config.data_dir / 'pki'}: "
                             f"{exc}") from exc
        secret_path = config.enrollment_secret_path
        ensure_secret(secret_path)
        self.enrollment = EnrollmentServer(self.pki, self.registry, lambda: read_secret(secret_path))
        self.sessions = Sessions(self._agent_changed)
        self.channel = ChannelServer(
            self.pki.server_context(require_client_cert=True), self.registry, self.sessions,
            self.core.pipeline.process_batch, self.core.get_state,
            ChannelSettings(config.manager.keepalive_seconds, config.manager.max_frame_bytes),
        )
        # Manager-side modules (the audit webhook): their events are the manager's own, agent "000".
        self.local_agent = AgentRef("000", config.manager.name, None)
        self.supervisor = Supervisor(kubernetes_modules(config, self.local_agent, self.core.pipeline.process_batch,
                                                        self.core.get_state, config.data_dir))
        self.ports: dict[str, int] = {}
        self._stopping = False

    def start(self) -> None:
        m = self.config.manager
        settle_for_throughput()
        self.core.start()
        self.ports["enrollment"] = self.enrollment.start(m.listen_host, m.enrollment_port)
        self.ports["channel"] = self.channel.start(m.listen_host, m.channel_port)
        self.supervisor.start()

    def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.enrollment.stop()
        self.channel.stop()
        self.supervisor.stop()
        self.core.stop()
        self.registry.close()

    def _agent_changed(self, kind: str, session: Session, reason: str) -> None:
        if self._stopping:
            return  # the manager is going down: not the agent's doing, and the store may be closed
        record = self.registry.get(session.agent_id)
        first = kind == "connected" and record is not None and record.last_seen is None
        if kind == "connected":
            log.info("agent %s (%s) connected from %s%s", session.agent_id, session.name, session.ip,
                     f"; {reason}" if reason else "")
        else:
            log.warning("agent %s (%s) disconnected: %s", session.agent_id, session.name, reason)
        self._agent_event(AgentRef(session.agent_id, session.name, session.ip),
                          "agent_connected" if kind == "connected" else "agent_disconnected",
                          {"first": first, "reason": reason, "version": session.version or ""})

    def _agent_event(self, agent: AgentRef, kind: str, extra: dict[str, Any]) -> None:
        """Connections, disconnections and removals are events too, analysed like any other (rules 501-505)."""
        data = {"vigil": {"module": "channel", "kind": kind, "agent_id": agent.id, "agent_name": agent.name,
                          **extra}}
        try:
            self.core.pipeline.process(Event(module="vigil", location="channel", timestamp=time.time(),
                                             decoder="vigil", agent=agent, data=data))
        except WriterError as exc:
            log.error("could not store the %s event of agent %s: %s", kind, agent.id, exc)

    # --- Backend for the API ---
    @property
    def rules(self) -> LoadedRules:
        return self.core.rules

    @property
    def db_path(self) -> Path:
        return self.config.db_path

    def health(self) -> dict[str, Any]:
        agents = self.registry.list()
        live = {s.agent_id for s in self.sessions.all()}
        return {
            "status": "ok", "version": __version__, "role": "manager", **self.core.health(),
            "agents": {"enrolled": sum(a.status != "removed" for a in agents), "connected": len(live)},
            "channel": {"port": self.ports.get("channel"), **dict(self.channel.counters)},
            "enrollment": {"port": self.ports.get("enrollment"), "enrolled": self.enrollment.enrolled,
                           "refused": self.enrollment.refused},
            "modules": self.supervisor.status(),
            "writer": {"pid": getattr(self.core.outputs, "pid", None),
                       "restarts": getattr(self.core.outputs, "restarts", 0)},
        }

    def _describe(self, record: AgentRecord) -> dict[str, Any]:
        session = self.sessions.get(record.id)
        if record.status == "removed":
            status = "removed"
        elif session is not None:
            status = "active"
        else:
            status = "disconnected" if record.last_seen else "never_connected"
        return {
            "id": record.id, "name": record.name, "ip": session.ip if session else record.ip, "status": status,
            "version": session.version if session else record.version,
            "os": session.os if session else record.os,
            "modules": session.modules if session else [m for m in (record.modules or "").split(",") if m],
            "last_seen": session.last_seen if session else record.last_seen,
            "events_received": session.events_received if session else record.events_received,
            "outbox_depth": session.outbox_depth if session else None,
            "dropped": session.dropped if session else None,
            "enrolled_at": record.enrolled_at, "enrollments": record.enrollments,
        }

    def list_agents(self) -> list[dict[str, Any]]:
        return [self._describe(r) for r in self.registry.list()]

    def get_agent(self, key: str) -> dict[str, Any] | None:
        record = self.registry.get(key)
        return self._describe(record) if record else None

    def remove_agent(self, key: str) -> bool:
        record = self.registry.get(key)
        if record is None or not self.registry.remove(record.id):
            return False
        self.sessions.kick(record.id)
        log.warning("agent %s (%s) removed: its certificate is refused from now on", record.id, record.name)
        self._agent_event(AgentRef(record.id, record.name, record.ip), "agent_removed", {})
        return True

    def send_command(self, key: str, op: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        record = self.registry.get(key)
        if record is None:
            raise LookupError(f"no agent {key!r}")
        try:
            return self.sessions.command(record.id, op, args, timeout)
        except TimeoutError as exc:
            raise CommandTimedOut(str(exc)) from None

    def metrics(self) -> list[Metric]:
        counters = dict(self.channel.counters)
        sessions = self.sessions.all()
        return [
            *self.core.metrics(),
            Metric("vigil_channel_events_total", "Events received from agents over the channel.", "counter",
                   [({}, float(counters.get("events_received", 0)))]),
            Metric("vigil_duplicates_dropped_total", "Replayed events dropped by sequence number.", "counter",
                   [({}, float(counters.get("duplicates_dropped", 0)))]),
            Metric("vigil_channel_refused_total", "Connections refused on the agent channel.", "counter",
                   [({}, float(counters.get("refused", 0)))]),
            Metric("vigil_enrollment_refused_total", "Enrollment requests refused.", "counter",
                   [({}, float(self.enrollment.refused))]),
            Metric("vigil_agents_connected", "Agents connected now.", "gauge", [({}, float(len(sessions)))]),
            Metric("vigil_agent_outbox_depth", "Events waiting in each connected agent's outbox.", "gauge",
                   [({"agent": s.agent_id}, float(s.outbox_depth)) for s in sessions]),
            Metric("vigil_agent_dropped_total", "Events each connected agent dropped with its outbox full.", "counter",
                   [({"agent": s.agent_id}, float(s.dropped)) for s in sessions]),
        ]
