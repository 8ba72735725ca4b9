"""What the API needs from a running Vigil: the manager and the all-in-one both provide it (DESIGN §4).

The routes stay thin: they read and act through this interface only, so the same app serves
`vigil up` (one local agent) and `vigil manager` (enrolled agents).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from vigil.manager.analysis.rule_loader import LoadedRules

MetricType = Literal["counter", "gauge"]


@dataclass(frozen=True)
class Metric:
    """One Prometheus metric family: `samples` are (labels, value) pairs."""

    name: str
    help: str
    type: MetricType
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


class CommandFailed(Exception):
    """A command could not be delivered or the agent answered with an error; the message says which."""


class CommandTimedOut(CommandFailed):
    """The agent did not answer within the timeout (the API answers 504 rather than 502)."""


class Backend(Protocol):
    @property
    def rules(self) -> LoadedRules: ...

    @property
    def db_path(self) -> Path:
        """The alert store (SQLite, read-only from the API)."""

    def health(self) -> dict[str, Any]: ...

    def list_agents(self) -> list[dict[str, Any]]:
        """Each: id, name, ip, status (active/disconnected/never_connected/removed), version, os, modules,
        last_seen (epoch or None), events_received, outbox_depth, enrolled_at."""

    def get_agent(self, key: str) -> dict[str, Any] | None:
        """By id or name."""

    def remove_agent(self, key: str) -> bool:
        """Revoke the agent's certificate and cut its connection; False when unknown or already removed.
        Raises ValueError with a reason a person can read when it cannot be removed (the local agent)."""

    def send_command(self, key: str, op: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Run `op` on the agent and wait for its answer; raises CommandFailed, or LookupError when unknown."""

    def metrics(self) -> list[Metric]: ...
