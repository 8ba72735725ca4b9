"""The Kubernetes modules a configuration asks for, in one list (DESIGN §4: nothing found by guesswork)."""

from __future__ import annotations

from pathlib import Path

from vigil.agent.modules.base import BatchSink, Module, StateReader
from vigil.agent.modules.cloud.registry import cloud_modules
from vigil.config import VigilConfig
from vigil.event import AgentRef


def kubernetes_modules(cfg: VigilConfig, agent: AgentRef, sink: BatchSink, read_state: StateReader,
                       data_dir: Path, cluster_wide: bool = True) -> list[Module]:
    """Raises VigilError when an enabled module cannot start (the webhook without its certificates).

    `cluster_wide`: also the sources that see the whole cluster (the API watch, EKS, GKE). The manager
    and `vigil up` run those; a node agent does not, or every node would report the same events."""
    k8s = cfg.kubernetes
    modules: list[Module] = []
    if k8s.audit_webhook.enabled:
        from vigil.agent.modules.kubernetes.audit_webhook import AuditWebhook

        modules.append(AuditWebhook(k8s.audit_webhook, k8s.cluster, k8s.dedupe_entries, agent, sink, data_dir))
    if k8s.audit_files:
        from vigil.agent.modules.kubernetes.audit_file import AuditFileModule

        modules.append(AuditFileModule(k8s.audit_files, k8s.cluster, k8s.dedupe_entries, agent, sink, read_state))
    if cluster_wide and k8s.watch.enabled:
        from vigil.agent.modules.kubernetes.watch import WatchModule

        modules.append(WatchModule(k8s.watch, k8s.cluster, agent, sink, read_state))
    if cluster_wide:
        modules.extend(cloud_modules(k8s, agent, sink, read_state))
    return modules
