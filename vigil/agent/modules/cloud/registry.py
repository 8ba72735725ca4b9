"""The managed-cluster audit modules a configuration asks for: one per `kubernetes.eks` / `kubernetes.gke` entry.

The cloud SDKs (boto3, google-cloud-pubsub) are imported by the modules when they run, so a configuration
without these sections needs neither.
"""

from __future__ import annotations

from vigil.agent.modules.base import BatchSink, Module, StateReader
from vigil.config_kubernetes import KubernetesConfig
from vigil.event import AgentRef


def cloud_modules(cfg: KubernetesConfig, agent: AgentRef, sink: BatchSink, read_state: StateReader) -> list[Module]:
    modules: list[Module] = []
    if cfg.eks:
        from vigil.agent.modules.cloud.eks import EksModule

        modules.extend(EksModule(eks, agent, sink, read_state) for eks in cfg.eks)
    if cfg.gke:
        from vigil.agent.modules.cloud.gke import GkeModule

        modules.extend(GkeModule(gke, agent, sink, read_state) for gke in cfg.gke)
    return modules
