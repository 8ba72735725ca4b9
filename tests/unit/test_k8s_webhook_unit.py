"""Audit webhook pieces without a network: the health events and their rule, the report throttle,
where its certificates come from, `vigil k8s webhook-config`'s kubeconfig, the module registry."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from typer.testing import CliRunner

from vigil.agent.modules.kubernetes.audit_normalize import problem_event
from vigil.agent.modules.kubernetes.audit_webhook import ProblemThrottle, WebhookTls
from vigil.agent.modules.kubernetes.registry import kubernetes_modules
from vigil.cli.main import app
from vigil.config import VigilConfig
from vigil.config_kubernetes import AuditWebhookConfig
from vigil.errors import VigilError
from vigil.event import AgentRef, Event

from .support import analyzer


def example_events() -> list[Event]:
    """For the house test: a refused webhook request fires 200005."""
    return [problem_event("k8s_audit_webhook", "k8s_audit_webhook:10.0.0.9", "auth_failed",
                          "audit webhook request from 10.0.0.9 refused: no client certificate and no bearer token",
                          details={"peer": "10.0.0.9", "count": 1})]


def test_a_refused_request_alerts_with_rule_200005_and_says_why() -> None:
    result = analyzer().analyse(example_events()[0])
    assert result.alert is not None and result.alert["rule"]["id"] == "200005"
    assert "no client certificate and no bearer token" in result.alert["rule"]["description"]
    other = problem_event("k8s_audit_webhook", "x", "reconnected", "back", details={"target": "t",
                                                                                   "outage_seconds": 1})
    assert analyzer().analyse(other).alert["rule"]["id"] != "200005"  # type: ignore[index]


def test_the_throttle_reports_the_first_then_one_count_per_interval() -> None:
    throttle = ProblemThrottle("m", None, seconds=0.2)
    first = throttle.note("auth_failed", "here", "refused")
    assert first is not None and first.data["vigil"]["count"] == 1
    assert all(throttle.note("auth_failed", "here", "refused") is None for _ in range(9))
    assert throttle.note("malformed_input", "here", "bad") is not None  # another kind is not held back
    assert throttle.due() == []
    time.sleep(0.25)
    [held] = throttle.due()
    assert held.data["vigil"]["count"] == 9 and "9 times" in held.data["vigil"]["error"]
    assert throttle.due() == []


def make(data_dir: Path, *extra: str) -> CliRunner:
    runner = CliRunner()
    result = runner.invoke(app, ["k8s", "webhook-config", "--server", "https://audit.example:7556/k8s-audit",
                                 "--data-dir", str(data_dir), *extra])
    assert result.exit_code == 0, result.output
    return runner


def test_webhook_config_writes_a_kubeconfig_with_the_ca_and_a_client_certificate(tmp_path: Path) -> None:
    make(tmp_path)
    d = tmp_path / "k8s-audit"
    doc = yaml.safe_load((d / "webhook-kubeconfig.yaml").read_text())
    cluster = doc["clusters"][0]["cluster"]
    assert cluster["server"] == "https://audit.example:7556/k8s-audit"
    assert base64.b64decode(cluster["certificate-authority-data"]) == (d / "ca.pem").read_bytes()
    user = doc["users"][0]["user"]
    client = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    assert client.subject.rfc4514_string() == "CN=vigil-k8s-audit"
    server = x509.load_pem_x509_certificate((d / "server.pem").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "audit.example" in sans.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
    assert doc["current-context"] == "vigil" and doc["contexts"][0]["context"]["user"] == "kube-apiserver"
    for secret in ("ca.key", "server.key", "client.key", "webhook-kubeconfig.yaml"):
        assert (d / secret).stat().st_mode & 0o077 == 0, secret


def test_webhook_config_with_token_keeps_the_ca_and_the_token(tmp_path: Path) -> None:
    make(tmp_path)
    ca = (tmp_path / "k8s-audit" / "ca.pem").read_bytes()
    make(tmp_path, "--token")
    make(tmp_path, "--token")
    d = tmp_path / "k8s-audit"
    assert (d / "ca.pem").read_bytes() == ca  # the API server's kubeconfig keeps working
    token = (d / "token").read_text().strip()
    user = yaml.safe_load((d / "webhook-kubeconfig.yaml").read_text())["users"][0]["user"]
    assert user == {"token": token} and len(token) >= 32
    tls = WebhookTls.resolve(AuditWebhookConfig(enabled=True), tmp_path)
    assert tls.token() == token.encode() and tls.client_ca == d / "ca.pem"


def test_webhook_config_refuses_a_plain_http_url(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["k8s", "webhook-config", "--server", "http://x:1/a", "--data-dir",
                                      str(tmp_path)])
    assert result.exit_code == 2 and "https://" in result.output


def test_without_a_client_ca_or_a_token_the_webhook_will_not_start(tmp_path: Path) -> None:
    make(tmp_path)
    d = tmp_path / "k8s-audit"
    cfg = AuditWebhookConfig(enabled=True, tls_cert_file=d / "server.pem", tls_key_file=d / "server.key")
    WebhookTls.resolve(cfg, tmp_path)  # the CA made beside them is used
    with pytest.raises(VigilError, match="anyone could post"):
        WebhookTls.resolve(cfg, tmp_path / "elsewhere")
    with pytest.raises(VigilError, match="bearer_token_file"):
        WebhookTls.resolve(cfg.model_copy(update={"bearer_token_file": tmp_path / "nope"}), tmp_path)


def test_the_registry_builds_what_the_config_asks_for(tmp_path: Path) -> None:
    def modules(k8s: dict[str, object]) -> list[str]:
        cfg = VigilConfig.model_validate({"kubernetes": k8s})
        return [m.name for m in kubernetes_modules(cfg, AgentRef(), lambda e, s: None, lambda k: None, tmp_path)]

    assert modules({}) == []
    assert modules({"audit_files": [{"path": str(tmp_path / "audit.log")}]}) == ["k8s_audit_file"]
    with pytest.raises(VigilError, match="webhook-config"):
        modules({"audit_webhook": {"enabled": True}})
    make(tmp_path)
    assert modules({"audit_webhook": {"enabled": True}}) == ["k8s_audit_webhook"]
