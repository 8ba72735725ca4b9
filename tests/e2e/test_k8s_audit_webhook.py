"""The audit webhook over real HTTPS on 127.0.0.1, as kube-apiserver would post to it: certificates
made by `vigil k8s webhook-config`, client certificate or bearer token, limits checked before reading,
garbage refused with a clear error and an alert, retries not stored twice, 503 when the queue is full.
No kube-apiserver runs here: the client is Python's http.client/ssl, posting the Falco fixtures."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

import vigil
from vigil.agent.modules.kubernetes.audit_webhook import AuditWebhook
from vigil.certs import key_pem
from vigil.cli.k8s import sign
from vigil.cli.main import app
from vigil.config_kubernetes import AuditWebhookConfig
from vigil.event import AgentRef, Event

from .daemons import free_port
from .vigil_proc import VigilProcess

FIXTURES = Path("/work/shared/fixtures/k8s-audit/falco-traces")
PATH = "/k8s-audit"


def fixture_events(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def event_list(items: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items})


def k8s_rules_shipped() -> bool:
    rules = Path(vigil.__file__).parent / "content" / "rules"
    return any("id: 2005" in p.read_text() for p in rules.glob("*.yml"))


def make_files(data_dir: Path) -> Path:
    """`vigil k8s webhook-config` twice: a client certificate, then a token (the CA is kept)."""
    runner = CliRunner()
    for extra in ([], ["--token"]):
        result = runner.invoke(app, ["k8s", "webhook-config", "--server", f"https://127.0.0.1:7556{PATH}",
                                     "--data-dir", str(data_dir), *extra])
        assert result.exit_code == 0, result.output
    return data_dir / "k8s-audit"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data_dir = tmp_path_factory.mktemp("webhook")
    d = make_files(data_dir)
    other = tmp_path_factory.mktemp("other-ca")
    result = CliRunner().invoke(app, ["k8s", "webhook-config", "--server", "https://127.0.0.1:1/x",
                                      "--out", str(other), "--data-dir", str(other)])
    assert result.exit_code == 0, result.output
    # A certificate from our CA with another name (what an enrolled agent's certificate looks like).
    ca = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), password=None)
    cert, key = sign(ca, ca_key, "vigil-agent-007", ExtendedKeyUsageOID.CLIENT_AUTH, [])  # type: ignore[arg-type]
    (d / "agent.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "agent.key").write_bytes(key_pem(key))
    return {"data_dir": data_dir, "dir": d, "other": other, "token": (d / "token").read_text().strip()}


class Running:
    """The module in a thread, its sink a list (optionally held shut by a gate)."""

    def __init__(self, data_dir: Path, **config: Any) -> None:
        self.stored: list[Event] = []
        self.gate = threading.Event()
        self.gate.set()
        cfg = AuditWebhookConfig(enabled=True, port=0, **config)
        self.webhook = AuditWebhook(cfg, "test-cluster", 1000, AgentRef("000", "test"), self.sink, data_dir)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.start()

    def start(self) -> None:
        """One run, as the supervisor makes it: a failure ends it with the error."""

        def run() -> None:
            try:
                self.webhook.run(self.stop)
            except Exception as exc:
                self.errors.append(exc)

        self.stop.clear()
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.webhook.listening.wait(5)
        assert self.webhook.port is not None
        self.port: int = self.webhook.port

    def sink(self, events: list[Event], state: Any) -> None:
        self.gate.wait(10)
        self.stored.extend(events)

    def close(self) -> None:
        self.gate.set()
        self.stop.set()
        self.webhook.interrupt()
        self.thread.join(10)
        assert not self.thread.is_alive()

    def kinds(self) -> list[str]:
        return [e.data["vigil"]["kind"] for e in self.stored if e.decoder == "vigil"]

    def audit(self) -> list[Event]:
        return [e for e in self.stored if e.data.get("integration") == "k8s_audit"]


@pytest.fixture
def hook(files: dict[str, Any]) -> Iterator[Running]:
    running = Running(files["data_dir"])
    yield running
    running.close()


def context(files: dict[str, Any], who: str | None = "client") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(files["dir"] / "ca.pem"))
    if who == "client":
        ctx.load_cert_chain(files["dir"] / "client.pem", files["dir"] / "client.key")
    elif who == "agent":
        ctx.load_cert_chain(files["dir"] / "agent.pem", files["dir"] / "agent.key")
    elif who == "other":
        ctx.load_cert_chain(files["other"] / "client.pem", files["other"] / "client.key")
    return ctx


def post(port: int, ctx: ssl.SSLContext, body: bytes, *, path: str = PATH, method: str = "POST",
         headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=20)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read().decode(), dict(response.getheaders())
    finally:
        conn.close()


def test_a_client_certificate_is_accepted_and_the_events_stored_as_audit_events(hook: Running,
                                                                                files: dict[str, Any]) -> None:
    status, _, _ = post(hook.port, context(files), event_list(fixture_events("exec_pod.json")))
    assert status == 200
    [event] = hook.audit()
    assert event.module == "kubernetes" and event.data["audit"]["source"] == "webhook"
    assert event.data["audit"]["cluster"] == "test-cluster"
    assert event.location == "k8s_audit_webhook:127.0.0.1"


def test_a_retried_batch_is_not_stored_twice(hook: Running, files: dict[str, Any]) -> None:
    body = event_list(fixture_events("create_configmap_sensitive_values.json"))
    assert post(hook.port, context(files), body)[0] == 200
    assert post(hook.port, context(files), body)[0] == 200  # the API server's retry
    assert len(hook.audit()) == 6
    assert hook.webhook.status()["duplicates"] == 6


def test_a_bearer_token_is_accepted(hook: Running, files: dict[str, Any]) -> None:
    status, _, _ = post(hook.port, context(files, None), event_list(fixture_events("create_secret.json")),
                        headers={"Authorization": f"Bearer {files['token']}"})
    assert status == 200 and len(hook.audit()) == 1


def test_no_or_wrong_credentials_get_401_and_one_alert_not_a_flood(hook: Running, files: dict[str, Any]) -> None:
    body = event_list(fixture_events("create_secret.json"))
    assert post(hook.port, context(files, None), body)[0] == 401
    for _ in range(20):
        status, _, headers = post(hook.port, context(files, None), body, headers={"Authorization": "Bearer nope"})
        assert status == 401 and headers.get("WWW-Authenticate") == "Bearer"
    time.sleep(0.5)
    assert hook.audit() == []
    assert hook.kinds() == ["auth_failed"]  # the other 20 are counted, reported later in one event
    assert hook.webhook.status()["auth_failed"] == 21
    first = next(e for e in hook.stored if e.decoder == "vigil")
    assert "no client certificate and no bearer token" in first.data["vigil"]["error"]


def test_a_certificate_with_another_name_gets_403(hook: Running, files: dict[str, Any]) -> None:
    status, _, _ = post(hook.port, context(files, "agent"), event_list(fixture_events("create_secret.json")))
    assert status == 403
    time.sleep(0.3)
    assert hook.audit() == [] and hook.kinds() == ["auth_failed"]
    assert "vigil-agent-007" in hook.stored[0].data["vigil"]["error"]


def test_a_certificate_from_another_ca_is_refused_in_the_handshake(hook: Running, files: dict[str, Any]) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        post(hook.port, context(files, "other"), event_list(fixture_events("create_secret.json")))
    time.sleep(0.3)
    assert hook.audit() == []
    assert hook.webhook.status()["tls_failed"] == 1
    assert hook.kinds() == ["auth_failed"]


def test_wrong_content_type_method_and_path(hook: Running, files: dict[str, Any]) -> None:
    ctx = context(files)
    assert post(hook.port, ctx, b"{}", headers={"Content-Type": "text/plain"})[0] == 415
    status, _, headers = post(hook.port, ctx, b"", method="GET")
    assert status == 405 and headers["Allow"] == "POST"
    assert post(hook.port, ctx, b"{}", path="/other")[0] == 404
    assert hook.stored == []


def test_a_20_mb_body_is_refused_with_413_before_it_is_read(hook: Running, files: dict[str, Any]) -> None:
    ctx = context(files)
    raw = socket.create_connection(("127.0.0.1", hook.port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        size = 20 * 1024 * 1024
        tls.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {size}\r\n\r\n".encode() + b"[" * 65536)
        # Only 64 KiB of the 20 MB were sent, and the answer is already there.
        answer = tls.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413"), answer
    assert hook.webhook.status()["too_large"] == 1
    assert post(hook.port, ctx, event_list(fixture_events("create_secret.json")))[0] == 200  # still serving


def test_garbage_gets_400_and_a_malformed_input_event(hook: Running, files: dict[str, Any]) -> None:
    status, message, _ = post(hook.port, context(files), b"\x00not json at all")
    assert status == 400 and "not valid JSON" in message
    time.sleep(0.3)
    [event] = hook.stored
    assert event.data["vigil"]["kind"] == "malformed_input"


def test_fal_01_003_gets_400_with_a_clear_error(hook: Running, files: dict[str, Any]) -> None:
    status, message, _ = post(hook.port, context(files), (FIXTURES / "fal_01_003.json").read_bytes())
    assert status == 400
    assert "kind must be 'Event' or 'EventList', got 0" in message


def test_100000_items_get_413_and_the_service_keeps_answering(hook: Running, files: dict[str, Any]) -> None:
    items = [{"kind": "Event", "auditID": f"id-{i}", "stage": "ResponseComplete"} for i in range(100_000)]
    status, message, _ = post(hook.port, context(files), event_list(items))
    assert status == 413 and "100000 audit events" in message
    assert hook.audit() == []
    assert post(hook.port, context(files), event_list(fixture_events("create_secret.json")))[0] == 200


def test_a_full_queue_gets_503_with_retry_after_and_the_retry_succeeds(files: dict[str, Any]) -> None:
    running = Running(files["data_dir"], queue_events=100, ack_timeout_seconds=0.5)
    try:
        running.gate.clear()  # storing hangs
        ctx = context(files)

        def batch(prefix: str) -> bytes:
            return event_list([{"kind": "Event", "auditID": f"{prefix}-{i}", "stage": "ResponseComplete",
                                "verb": "get"} for i in range(60)])

        first = batch("a")
        status, _, headers = post(running.port, ctx, first)
        assert status == 503 and headers["Retry-After"]  # queued, not yet stored in time
        status, _, headers = post(running.port, ctx, batch("b"))
        assert status == 503 and headers["Retry-After"]  # 60 + 60 > queue_events: not taken at all
        running.gate.set()
        deadline = time.monotonic() + 5
        while len(running.audit()) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert post(running.port, ctx, first)[0] == 200  # the retry of the first: already stored
        assert post(running.port, ctx, batch("b"))[0] == 200
        ids = [e.data["k8s"]["auditID"] for e in running.audit()]
        assert len(ids) == 120 and len(set(ids)) == 120
    finally:
        running.close()


def test_the_webhook_refuses_to_start_without_certificates(tmp_path: Path) -> None:
    from vigil.errors import VigilError

    with pytest.raises(VigilError, match="vigil k8s webhook-config"):
        AuditWebhook(AuditWebhookConfig(enabled=True), "c", 100, AgentRef(), lambda e, s: None, tmp_path)


# --- through `vigil up` ---


def test_vigil_up_turns_posted_fixtures_into_alerts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    d = make_files(data_dir)
    port = free_port()
    config = {"docker": {"enabled": False},
              "kubernetes": {"cluster": "prod", "audit_webhook": {"enabled": True, "port": port}}}
    ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
    ctx.load_cert_chain(d / "client.pem", d / "client.key")
    with VigilProcess(data_dir, "unix:///nonexistent.sock", config) as vigil:
        deadline = time.monotonic() + 10
        while not vigil.health()["modules"].get("k8s_audit_webhook", {}).get("listening"):
            assert time.monotonic() < deadline, vigil.log()
            time.sleep(0.05)
        assert post(port, ctx, b"][ garbage")[0] == 400
        vigil.wait_for(lambda a: a["rule"]["id"] == "200001" and "k8s_audit_webhook" in a["rule"]["description"],
                       timeout=10)
        manifest = json.loads((FIXTURES / "manifest.json").read_text())
        seen: set[tuple[str, str]] = set()
        expect: dict[str, set[str]] = {}
        for entry in manifest:
            if entry["file"] == "fal_01_003.json":
                continue
            items = fixture_events(entry["file"])
            assert post(port, ctx, event_list(items))[0] == 200, entry["file"]
            keys = {(e["auditID"], e["stage"]) for e in items}
            if entry["expected_rules"] and not entry["extra_rule_files_in_test"] and keys - seen:
                expect[entry["file"]] = {e["auditID"] for e in items}
            seen |= keys
        assert len(expect) >= 25  # the fixtures Falco expects a detection for
        status, message, _ = post(port, ctx, (FIXTURES / "fal_01_003.json").read_bytes())
        assert status == 400 and "got 0" in message
        if not k8s_rules_shipped():
            pytest.skip("the Kubernetes audit rules (2005xx) are not shipped yet")
        deadline = time.monotonic() + 15
        while True:
            alerts = vigil.file_alerts()
            fired = {a["data"]["k8s"]["auditID"] for a in alerts
                     if a["rule"]["id"].startswith("2005") and "k8s" in a.get("data", {})}
            missing = [f for f, ids in expect.items() if not ids & fired]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert missing == [], missing
        assert all(a["data"]["audit"]["cluster"] == "prod" for a in alerts if "audit" in a.get("data", {}))


def test_vigil_manager_runs_the_webhook_and_alerts_on_a_privileged_pod(tmp_path: Path) -> None:
    from .cluster import ManagerProcess

    data_dir = tmp_path / "manager"
    d = make_files(data_dir)
    port = free_port()
    ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
    ctx.load_cert_chain(d / "client.pem", d / "client.key")
    manager = ManagerProcess(data_dir, {"kubernetes": {"audit_webhook": {"enabled": True, "port": port}}})
    with manager:
        deadline = time.monotonic() + 10
        while True:
            try:
                status = post(port, ctx, event_list(fixture_events("create_nginx_pod_privileged.json")))[0]
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, manager.log()
                time.sleep(0.05)
        assert status == 200
        alert = manager.wait_for(lambda a: a["rule"]["id"].startswith("2005") and a["rule"]["level"] >= 10)
        assert alert["agent"]["id"] == "000" and alert["data"]["audit"]["source"] == "webhook"


def test_a_failed_store_keeps_the_events_for_the_next_run(files: dict[str, Any]) -> None:
    running = Running(files["data_dir"], ack_timeout_seconds=0.5)
    failures = [RuntimeError("disk full")]
    store = running.sink

    def failing_sink(events: list[Event], state: Any) -> None:
        if failures:
            raise failures.pop()
        store(events, state)

    running.webhook.sink = failing_sink
    try:
        body = event_list(fixture_events("create_secret.json"))
        assert post(running.port, context(files), body)[0] == 503
        running.thread.join(5)  # the run ends with the sink's error: the supervisor would restart it
        assert not running.thread.is_alive() and [str(e) for e in running.errors] == ["disk full"]
        assert running.webhook.status()["last_error"] == "storing audit events failed: disk full"
        running.start()
        deadline = time.monotonic() + 5
        while len(running.audit()) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(running.audit()) == 1
        assert running.webhook.status()["store_failed"] == 1
    finally:
        running.close()
