"""The `kubernetes:` section of the configuration: audit logs (webhook, files), the API watch, managed
clusters' audit logs (EKS through CloudWatch Logs, GKE through Pub/Sub) and the node's HTTP log
receiver. Everything is off until configured; docs/kubernetes.md and docs/configuration.md."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AuditWebhookConfig(_Strict):
    """An HTTPS endpoint for a kube-apiserver's `--audit-webhook-config-file`."""

    enabled: bool = False
    host: str = Field("127.0.0.1", description="listen address; the API server must reach it")
    port: int = Field(7556, ge=0, le=65535, description="0 picks a free port")
    path: str = Field("/k8s-audit", description="the URL path the API server posts to")
    tls_cert_file: Path | None = Field(None, description="the server certificate (PEM); default: made by "
                                       "`vigil k8s webhook-config` in DATA_DIR/k8s-audit")
    tls_key_file: Path | None = Field(None, description="its key (PEM); default: beside it")
    client_ca_file: Path | None = Field(None, description="CA that signs the API server's client certificate; "
                                        "default: the one `vigil k8s webhook-config` made")
    client_names: list[str] = Field(default_factory=lambda: ["vigil-k8s-audit"],
                                    description="accepted client certificate common names")
    bearer_token_file: Path | None = Field(None, description="a file holding a token the API server sends as "
                                           "`Authorization: Bearer`; either this or a client certificate is needed")
    max_body_bytes: int = Field(12 * 1024 * 1024, ge=1024, description="larger requests are refused (413) unread")
    max_event_bytes: int = Field(1024 * 1024, ge=1024, description="larger events are dropped, counted and alerted")
    max_events_per_request: int = Field(10_000, ge=1, description="larger EventLists are refused (413)")
    queue_events: int = Field(100_000, ge=100, description="events received but not yet stored; when full the "
                              "API server is told to retry (503)")
    ack_timeout_seconds: float = Field(5.0, gt=0, le=60, description="how long a request waits for its events "
                                       "to be stored before the API server is told to retry (503)")
    max_connections: int = Field(64, ge=1, description="connections served at once; more are closed at once")


class AuditFileConfig(_Strict):
    """A kube-apiserver `--audit-log-path` file (JSON lines), followed through rotation."""

    path: Path
    cluster: str | None = Field(None, description="default: kubernetes.cluster")
    start_at: Literal["end", "beginning"] = Field("end", description="where a file is read from the first time "
                                                  "(a file that appears later is read whole)")
    max_line_bytes: int = Field(1024 * 1024, ge=1024, description="longer lines are dropped, counted and alerted")


class WatchConfig(_Strict):
    """The Kubernetes API watched directly, for clusters whose audit logs are not available."""

    enabled: bool = False
    kubeconfig: Path | None = Field(None, description="default: in-cluster service account when running in a pod, "
                                    "else $KUBECONFIG or ~/.kube/config")
    context: str | None = None
    resources: list[str] = Field(
        default_factory=lambda: ["pods", "deployments", "daemonsets", "statefulsets", "configmaps", "secrets",
                                 "roles", "rolebindings", "clusterroles", "clusterrolebindings", "namespaces"],
        description="kinds watched (plural names); secrets are read as metadata only")
    timeout_seconds: int = Field(300, ge=1, description="each watch request's server-side timeout")
    reconnect_min_seconds: float = Field(0.5, gt=0)
    reconnect_max_seconds: float = Field(30.0, gt=0)
    report_existing: bool = Field(True, description="at the first start, report existing pods, workloads and "
                                  "RBAC objects once (type EXISTING) so risky ones alert; never as 'added'")

    @field_validator("resources")
    @classmethod
    def _known_resources(cls, value: list[str]) -> list[str]:
        from vigil.agent.modules.kubernetes.watch_normalize import RESOURCES

        unknown = [r for r in value if r not in RESOURCES]
        if unknown:
            raise ValueError(f"unknown resource(s) {unknown}; use some of {sorted(RESOURCES)}")
        return list(dict.fromkeys(value))


class EksConfig(_Strict):
    """An EKS cluster's audit log in CloudWatch Logs (control plane logging with `audit` on)."""

    cluster: str
    region: str
    log_group: str | None = Field(None, description="default: /aws/eks/<cluster>/cluster")
    stream_prefix: str = "kube-apiserver-audit-"
    endpoint_url: str | None = Field(None, description="another CloudWatch Logs endpoint (a VPC endpoint, a test)")
    profile: str | None = Field(None, description="an AWS profile; default: the usual credential chain")
    start_at: Literal["end", "beginning"] = Field("end", description="where streams seen at the first start are read")
    poll_seconds: float = Field(10.0, gt=0)


class GkeConfig(_Strict):
    """A GKE cluster's Cloud Audit Logs (k8s.io) from a Pub/Sub subscription fed by a Log Router sink."""

    project: str
    subscription: str = Field(description="the subscription name or its full path")
    cluster: str | None = Field(None, description="default: read from each entry's resource labels")
    credentials_file: Path | None = Field(None, description="a service account key; default: application default")
    max_messages: int = Field(500, ge=1, le=1000, description="messages pulled at once")


class HttpLogsConfig(_Strict):
    """An HTTP endpoint on the node agent where pods POST log lines (JSON lines or text; off by default)."""

    enabled: bool = False
    host: str = Field("127.0.0.1", description="listen address; the node's address to take pods' logs")
    port: int = Field(7557, ge=0, le=65535, description="0 picks a free port")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="larger requests are refused (413) unread")
    max_line_bytes: int = Field(64 * 1024, ge=256, description="longer lines are cut there and marked "
                                "(`log.truncated`), never dropped")
    max_lines_per_request: int = Field(20_000, ge=1, description="requests with more lines are refused (413)")
    queue_lines: int = Field(100_000, ge=100, description="lines received but not yet stored; when full the "
                             "sender is told to retry (503 with Retry-After)")
    ack_timeout_seconds: float = Field(10.0, gt=0, description="how long a request waits for its lines to be "
                                       "stored (200); after that it is answered 202 and they are stored later")
    max_clients: int = Field(64, ge=1, description="open connections; more are closed at once")

    @model_validator(mode="after")
    def _queue_holds_a_request(self) -> HttpLogsConfig:
        if self.queue_lines < self.max_lines_per_request:
            raise ValueError("queue_lines must be at least max_lines_per_request, or a full request never fits")
        return self


class KubernetesConfig(_Strict):
    cluster: str = Field("kubernetes", description="the cluster's name in alerts (data.audit.cluster)")
    audit_webhook: AuditWebhookConfig = Field(default_factory=AuditWebhookConfig)
    audit_files: list[AuditFileConfig] = Field(default_factory=list)
    dedupe_entries: int = Field(100_000, ge=100, description="audit ids remembered to drop repeats")
    watch: WatchConfig = Field(default_factory=WatchConfig)
    eks: list[EksConfig] = Field(default_factory=list)
    gke: list[GkeConfig] = Field(default_factory=list)
    http_logs: HttpLogsConfig = Field(default_factory=HttpLogsConfig)
