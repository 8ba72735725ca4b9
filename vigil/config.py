"""The one configuration file, validated by typed models that reject unknown keys (DESIGN §2.4)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vigil.config_kubernetes import KubernetesConfig
from vigil.errors import ConfigError, LoadError, Problem
from vigil.yamlsrc import line_at, load_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DockerTLS(_Strict):
    """Client certificates for a remote engine at tcp://host:2376."""

    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    verify: bool = True


class DockerConfig(_Strict):
    enabled: bool = True
    host: str | None = Field(None, description="engine URL; default: $DOCKER_HOST, else unix:///var/run/docker.sock")
    tls: DockerTLS | None = None
    inspect: bool = Field(True, description="inspect containers to detect privileged mode, mounts, capabilities")
    reconnect_min_seconds: float = Field(0.5, gt=0)
    reconnect_max_seconds: float = Field(30.0, gt=0)
    max_event_bytes: int = Field(1024 * 1024, ge=1024, description="larger events are cut and flagged")
    api_timeout_seconds: float = Field(10.0, gt=0)
    engine_event_buffer: int = Field(
        256, ge=1, description="past events the engine keeps (dockerd: 256); a resume that replays that many "
        "may have missed older ones, which raises rule 200003",
    )


DEFAULT_LOG_FILES = [
    "/var/log/syslog", "/var/log/messages", "/var/log/auth.log", "/var/log/secure", "/var/log/kern.log",
    "/var/log/dpkg.log", "/var/log/apt/history.log", "/var/log/yum.log", "/var/log/dnf.rpm.log",
    "/var/log/apk.log", "/var/log/nginx/*.log", "/var/log/apache2/*.log", "/var/log/httpd/*_log",
]


class SyslogReceiverConfig(_Strict):
    """A syslog server in the agent, so other hosts and pods can send it their logs (RFC 3164 and 5424)."""

    enabled: bool = False
    host: str = Field("127.0.0.1", description="listen address; 0.0.0.0 to take logs from other hosts and pods")
    udp_port: int | None = Field(514, ge=0, le=65535, description="null turns UDP off; 0 picks a free port")
    tcp_port: int | None = Field(514, ge=0, le=65535, description="null turns TCP off; 0 picks a free port "
                                 "(newline or octet-counted framing, RFC 6587)")
    queue_messages: int = Field(10_000, ge=10, description="messages waiting to be stored; when full, TCP senders "
                                "wait and new UDP messages are dropped, counted and alerted (rule 200003)")
    max_tcp_clients: int = Field(256, ge=1)


class LogsConfig(_Strict):
    """The log collector: host files, Docker and Kubernetes container logs, the journal, a syslog receiver."""

    enabled: bool = True
    files: list[str] = Field(default_factory=lambda: list(DEFAULT_LOG_FILES),
                             description="files and globs (`*`, `?`, `[...]`); files that appear later are picked up")
    docker_containers: bool = Field(True, description="read json-file container logs under the engine's data root")
    docker_data_root: Path = Field(Path("/var/lib/docker"), description="dockerd's --data-root")
    cri_logs: bool = Field(True, description="read Kubernetes container logs (CRI format) in cri_dir")
    cri_dir: Path = Field(Path("/var/log/containers"))
    journal: Literal["auto", "on", "off"] = Field("auto", description="the systemd journal, through journalctl; "
                                                  "auto: when the host has one")
    journal_path: Path | None = Field(None, description="a journal directory or file to read instead of the "
                                      "host's (e.g. a node's /var/log/journal mounted into the agent's pod)")
    max_line_bytes: int = Field(64 * 1024, ge=256, description="longer lines are cut there and marked "
                                "(`log.truncated`), never dropped")
    poll_seconds: float = Field(0.25, gt=0, description="how often files are checked for new lines and rotation")
    rescan_seconds: float = Field(5.0, gt=0, description="how often globs are expanded again for new files")
    start_at: Literal["end", "beginning"] = Field("end", description="where a file seen at the first start is "
                                                  "read from; files that appear later are read whole")
    syslog: SyslogReceiverConfig = Field(default_factory=SyslogReceiverConfig)


class AgentConfig(_Strict):
    id: str = Field("000", description="the local agent's id in `vigil up`; an enrolled agent gets its id from "
                    "the manager")
    name: str = Field(default_factory=socket.gethostname, description="the name the agent enrolls under")
    ip: str | None = None
    manager_host: str | None = Field(None, description="`vigil agent`: the manager's address (name or IP, as in its "
                                     "certificate); default: the one given to `vigil agent enroll`")
    manager_port: int = Field(1514, ge=1, le=65535, description="the manager's agent channel")
    outbox_max_events: int = Field(1_000_000, ge=100, description="events kept while the manager is out of reach; "
                                   "more are dropped, counted and reported (rule 200003)")
    batch_max_events: int = Field(2000, ge=1)
    batch_max_bytes: int = Field(1024 * 1024, ge=1024)
    window_batches: int = Field(4, ge=1, le=64, description="batches sent before waiting for an acknowledgement")
    reconnect_min_seconds: float = Field(0.5, gt=0)
    reconnect_max_seconds: float = Field(30.0, gt=0)


def _default_server_names() -> list[str]:
    return sorted({socket.gethostname(), "localhost", "127.0.0.1"})


class ManagerConfig(_Strict):
    name: str = Field(default_factory=socket.gethostname)
    listen_host: str = Field("0.0.0.0", description="where the enrollment and agent channels listen")
    channel_port: int = Field(1514, ge=0, le=65535, description="agents send events here (mutual TLS 1.3)")
    enrollment_port: int = Field(1515, ge=0, le=65535, description="agents enroll here (TLS 1.3)")
    server_names: list[str] = Field(default_factory=_default_server_names, description="names and IPs agents use "
                                    "to reach the manager; its certificate carries them")
    enrollment_secret_file: Path | None = Field(None, description="default: DATA_DIR/enrollment.secret, made on first "
                                                "start; read at every enrollment, so rotating needs no restart")
    keepalive_seconds: float = Field(10.0, ge=0.2, description="agents send a keepalive this often; three missed "
                                     "intervals mean disconnected")
    max_frame_bytes: int = Field(8 * 1024 * 1024, ge=64 * 1024, description="larger frames are refused")


class ApiConfig(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(7555, ge=0, le=65535)
    max_page_size: int = Field(1000, ge=1)
    token_ttl_seconds: int = Field(900, ge=1, description="lifetime of a login token")
    max_body_bytes: int = Field(1024 * 1024, ge=1, description="larger request bodies are refused (413)")
    rate_per_second: float = Field(20.0, gt=0, description="requests per second per client address")
    rate_burst: int = Field(100, ge=1, description="requests a client may make at once before the rate applies")
    login_attempts_per_minute: int = Field(10, ge=1, description="per user name and client address")


class AnalysisConfig(_Strict):
    rules_dir: Path | None = Field(None, description="user rules; default: DATA_DIR/rules")
    decoders_dir: Path | None = Field(None, description="user decoders for text logs; default: DATA_DIR/decoders")
    fold_window_seconds: float = Field(60.0, ge=0, description="0 turns folding of repeated alerts off")
    min_alert_level: int = Field(3, ge=0, le=16, description="lower levels are counted, not alerted")


class AlertsJsonConfig(_Strict):
    enabled: bool = True
    path: Path | None = Field(None, description="default: DATA_DIR/alerts.json")


class OutputsConfig(_Strict):
    alerts_json: AlertsJsonConfig = Field(default_factory=AlertsJsonConfig)


class VigilConfig(_Strict):
    data_dir: Path = Field(default_factory=lambda: Path(os.environ.get("VIGIL_DATA_DIR", "vigil-data")))
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    manager: ManagerConfig = Field(default_factory=ManagerConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    docker: DockerConfig = Field(default_factory=DockerConfig)
    logs: LogsConfig = Field(default_factory=LogsConfig)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)

    @property
    def rules_dir(self) -> Path:
        return self.analysis.rules_dir or self.data_dir / "rules"

    @property
    def decoders_dir(self) -> Path:
        return self.analysis.decoders_dir or self.data_dir / "decoders"

    @property
    def alerts_json_path(self) -> Path:
        return self.outputs.alerts_json.path or self.data_dir / "alerts.json"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "vigil.db"

    @property
    def enrollment_secret_path(self) -> Path:
        return self.manager.enrollment_secret_file or self.data_dir / "enrollment.secret"


def load_config(path: Path | None) -> VigilConfig:
    """Read the YAML config (or the defaults when no file is given); every problem names its line."""
    if path is None:
        return VigilConfig()
    try:
        raw = load_yaml(path, "configuration")
    except LoadError as exc:
        raise ConfigError("configuration", exc.problems) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("configuration", [Problem(str(path), 1, "the top level must be a mapping of options")])
    try:
        return VigilConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("configuration", _problems(path, raw, exc)) from exc


def _problems(path: Path, raw: Any, exc: ValidationError) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            message = f"unknown option {dotted!r} (check the spelling; see docs/configuration.md)"
        else:
            message = f"{dotted}: {err['msg']}"
        problems.append(Problem(str(path), line_at(raw, loc), message))
    return problems
