"""Watches the Kubernetes API (list, then watch) for clusters whose audit logs Vigil cannot read.

One thread per watched resource (`watch_loop`). Each lists, then watches from the list's resourceVersion.
The resourceVersion is committed with every batch, so a restart resumes the watch where it stopped.
When the API server no longer has that version (410 Gone) the resource is listed again and compared with
what was known (`watch_list`), so changes made during the gap still become ADDED/MODIFIED/DELETED events,
and a `possible_gap` health event (rule 200006) says it happened.

First start: existing objects are not reported as "added". Pods, workloads and RBAC objects are
reported once as type EXISTING (config `report_existing`), so a privileged pod or a cluster-admin
binding that predates Vigil still alerts; everything else becomes a silent baseline.
"""

from __future__ import annotations

import threading
from typing import Any

from vigil.agent.modules.base import BatchSink, StateReader
from vigil.agent.modules.kubernetes.watch_client import CONNECT_SECONDS, api_client
from vigil.agent.modules.kubernetes.watch_kind import WatchedKind, state_key
from vigil.agent.modules.kubernetes.watch_loop import follow
from vigil.agent.modules.kubernetes.watch_reporter import MODULE, WatchReporter
from vigil.config_kubernetes import WatchConfig
from vigil.event import AgentRef

__all__ = ["MODULE", "WatchModule", "state_key"]


class WatchModule:
    """The `k8s_watch` module: every configured resource listed, then watched, changes sent to the sink."""

    name = MODULE

    def __init__(self, config: WatchConfig, cluster: str, agent: AgentRef, sink: BatchSink,
                 read_state: StateReader) -> None:
        self.config = config
        self.cluster = cluster
        self.agent = agent
        self.sink = sink
        self.reporter = WatchReporter(cluster, agent, sink)
        self.location = self.reporter.location
        self.kinds: dict[str, WatchedKind] = {
            resource: WatchedKind.resume(resource, read_state(state_key(resource))) for resource in config.resources}

    @property
    def server(self) -> str | None:
        """The API server, once `run` has configured the client."""
        return self.reporter.server

    # --- Module contract ---

    def status(self) -> dict[str, Any]:
        return {"server": self.server, "cluster": self.cluster,
                "resources": {r: {"resource_version": k.rv, "connected": k.connected, "objects":
                                  len(k.snapshot or {}), "last_error": k.last_error, **k.counters}
                              for r, k in self.kinds.items()}}

    def interrupt(self) -> None:
        for kind in self.kinds.values():
            kind.unblock()

    def run(self, stop: threading.Event) -> None:
        api, self.reporter.server = api_client(self.config)
        threads = [threading.Thread(target=follow, args=(api, kind, stop, self.config, self.reporter),
                                    name=f"k8s-watch-{r}", daemon=True)
                   for r, kind in self.kinds.items()]
        for thread in threads:
            thread.start()
        stop.wait()
        self.interrupt()
        for thread in threads:
            thread.join(timeout=CONNECT_SECONDS)
        api.close()
