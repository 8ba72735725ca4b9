"""GKE Cloud Audit Log entries -> audit.k8s.io Events: the mapping of docs/kubernetes.md (GKE)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vigil.agent.modules.cloud.gke_convert import NotAuditEntry, convert, object_reference
from vigil.agent.modules.kubernetes.audit_normalize import audit_event

K8S_FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "k8s-audit"
TRACES = K8S_FIXTURES / "falco-traces"
GKE_SHAPE = K8S_FIXTURES / "envelope-shapes" / "gke-cloud-audit-logentry.json"
HTTP_TO_RPC = {401: 16, 403: 7, 404: 5, 409: 6}


def fixture_events(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (TRACES / name).read_text().splitlines() if line.strip()]


def log_entry(audit: dict[str, Any], *, project: str = "my-project", cluster: str = "my-cluster") -> dict[str, Any]:
    """The Cloud Audit Log entry GKE would write for an audit event (the inverse of the mapping, for tests)."""
    ref = audit.get("objectRef", {})
    group = ref.get("apiGroup") or "core"
    version = ref.get("apiVersion", "v1").rsplit("/", 1)[-1]
    parts = [group, version]
    if ref.get("namespace") and ref.get("resource") != "namespaces":
        parts += ["namespaces", ref["namespace"]]
    parts += [ref[k] for k in ("resource", "name", "subresource") if ref.get(k)]
    method = ".".join(["io.k8s", group, version, *[ref[k] for k in ("resource", "subresource") if ref.get(k)],
                       audit["verb"]])
    code = audit.get("responseStatus", {}).get("code", 200)
    payload: dict[str, Any] = {
        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "serviceName": "k8s.io", "methodName": method, "resourceName": "/".join(parts),
        "authenticationInfo": {"principalEmail": audit["user"]["username"]},
        "requestMetadata": {"callerIp": (audit.get("sourceIPs") or ["192.0.2.1"])[0],
                            "callerSuppliedUserAgent": audit.get("userAgent", "kubectl")},
        "status": {"code": 0 if code < 300 else HTTP_TO_RPC.get(code, 2)},
    }
    for src, dst in (("requestObject", "request"), ("responseObject", "response")):
        if src in audit:
            payload[dst] = audit[src]
    when = audit.get("stageTimestamp") or audit.get("timestamp") or "2026-11-27T10:00:00.000000Z"
    return {"protoPayload": payload, "insertId": audit["auditID"], "timestamp": when,
            "logName": f"projects/{project}/logs/cloudaudit.googleapis.com%2Factivity",
            "resource": {"type": "k8s_cluster",
                         "labels": {"project_id": project, "location": "europe-west1", "cluster_name": cluster}},
            "labels": dict(audit.get("annotations", {})), "receiveTimestamp": when}


def test_the_gke_exec_shape_becomes_the_exec_event_the_webhook_sends() -> None:
    exec_pod = fixture_events("exec_pod.json")[0]
    event, gcp = convert(json.loads(GKE_SHAPE.read_text()))
    assert {k: event[k] for k in ("verb", "stage", "auditID")} == {k: exec_pod[k] for k in ("verb", "stage", "auditID")}
    assert event["responseStatus"]["code"] == 101
    assert event["objectRef"] == {k: exec_pod["objectRef"][k]
                                  for k in ("apiVersion", "namespace", "resource", "name", "subresource")}
    assert event["user"] == {"username": "dev@example.com"}
    assert event["sourceIPs"] == ["192.0.2.10"]
    assert event["userAgent"].startswith("kubectl/")
    assert event["annotations"]["authorization.k8s.io/decision"] == "allow"
    assert event["requestURI"] == "/api/v1/namespaces/default/pods/nginx-deployment-7998647bdf-phvq7/exec"
    assert event["stageTimestamp"] == "2018-10-26T13:38:34.867116Z"
    assert gcp == {"project": "my-project", "cluster": "my-cluster", "location": "us-central1",
                   "insertId": "ca1ed9f4-7bf4-4c85-81a8-1b11253d1ba6",
                   "logName": "projects/my-project/logs/cloudaudit.googleapis.com%2Factivity",
                   "principalEmail": "dev@example.com", "status": 0,
                   "receiveTimestamp": "2018-10-26T13:38:35.100000Z"}


@pytest.mark.parametrize(("resource_name", "expected"), [
    ("core/v1/namespaces/default/pods/web-1/exec",
     {"apiVersion": "v1", "namespace": "default", "resource": "pods", "name": "web-1", "subresource": "exec"}),
    ("core/v1/namespaces/default/pods", {"apiVersion": "v1", "namespace": "default", "resource": "pods"}),
    ("apps/v1/namespaces/prod/deployments/api",
     {"apiGroup": "apps", "apiVersion": "v1", "namespace": "prod", "resource": "deployments", "name": "api"}),
    ("rbac.authorization.k8s.io/v1/clusterrolebindings/admin-binding",
     {"apiGroup": "rbac.authorization.k8s.io", "apiVersion": "v1", "resource": "clusterrolebindings",
      "name": "admin-binding"}),
    ("core/v1/namespaces/foo", {"apiVersion": "v1", "resource": "namespaces", "name": "foo"}),
    ("core/v1/namespaces/foo/finalize",
     {"apiVersion": "v1", "resource": "namespaces", "name": "foo", "subresource": "finalize"}),
    ("core/v1/nodes/node-1/status",
     {"apiVersion": "v1", "resource": "nodes", "name": "node-1", "subresource": "status"}),
    ("healthz", {}),
])
def test_resource_names_become_object_references(resource_name: str, expected: dict[str, str]) -> None:
    assert object_reference(resource_name) == expected


@pytest.mark.parametrize(("method", "rpc", "code", "stage"), [
    ("io.k8s.core.v1.pods.create", 0, 201, "ResponseComplete"),
    ("io.k8s.core.v1.pods.get", 0, 200, "ResponseComplete"),
    ("io.k8s.core.v1.pods.exec.create", 0, 101, "ResponseStarted"),
    ("io.k8s.core.v1.pods.exec.create", 7, 403, "ResponseComplete"),
    ("io.k8s.core.v1.pods.get", 16, 401, "ResponseComplete"),
    ("io.k8s.core.v1.pods.get", 5, 404, "ResponseComplete"),
    ("io.k8s.core.v1.pods.create", 6, 409, "ResponseComplete"),
    ("io.k8s.core.v1.pods.create", 13, 500, "ResponseComplete"),
])
def test_status_codes_and_stages(method: str, rpc: int, code: int, stage: str) -> None:
    sub = "/exec" if ".exec." in method else ""
    entry = {"protoPayload": {"serviceName": "k8s.io", "methodName": method,
                              "resourceName": f"core/v1/namespaces/default/pods/p{sub}",
                              "status": {"code": rpc, "message": "denied" if rpc else ""}},
             "insertId": "i-1"}
    event, gcp = convert(entry)
    assert (event["responseStatus"]["code"], event["stage"], event["verb"]) == (code, stage, method.rsplit(".", 1)[1])
    assert gcp["status"] == rpc
    assert ("message" in event["responseStatus"]) == (rpc != 0)


@pytest.mark.parametrize(("entry", "error"), [
    ([1, 2], "not a LogEntry: a JSON list"),
    ({"textPayload": "hello"}, "no protoPayload"),
    ({"protoPayload": {"serviceName": "storage.googleapis.com", "methodName": "x"}}, "'storage.googleapis.com'"),
    ({"protoPayload": {"serviceName": "k8s.io"}}, "without a methodName"),
])
def test_entries_that_are_not_kubernetes_audit_entries_are_refused_with_a_reason(entry: Any, error: str) -> None:
    with pytest.raises(NotAuditEntry, match=error.replace("(", r"\(")):
        convert(entry)


def test_the_truncated_label_is_reported_and_missing_fields_do_not_crash() -> None:
    event, gcp = convert({"protoPayload": {"serviceName": "k8s.io", "methodName": "io.k8s.core.v1.pods.list",
                                           "status": "weird"}, "labels": {"audit.k8s.io/truncated": "true"}})
    assert gcp["truncated"] is True
    assert event["user"] == {"username": ""} and event["sourceIPs"] == [] and "objectRef" not in event


@pytest.mark.parametrize("name", sorted(p.name for p in TRACES.glob("*.json")
                                        if p.name not in ("manifest.json", "fal_01_003.json")))
def test_every_fixture_survives_the_round_trip_through_the_gke_shape(name: str) -> None:
    for audit in fixture_events(name):
        event, _ = convert(json.loads(json.dumps(log_entry(audit))))
        ref = {k: v for k, v in audit.get("objectRef", {}).items() if k in ("apiGroup", "resource", "name",
                                                                               "namespace", "subresource")}
        if ref.get("resource") == "namespaces":
            ref.pop("namespace", None)
        assert {k: v for k, v in event["objectRef"].items() if k != "apiVersion"} == ref
        assert event["verb"] == audit["verb"]
        assert event["user"]["username"] == audit["user"]["username"]
        assert event.get("requestObject") == audit.get("requestObject")
        assert event["responseStatus"]["code"] // 100 == audit["responseStatus"]["code"] // 100


def test_a_converted_privileged_pod_gets_the_posture_block_and_the_gcp_block() -> None:
    audit = fixture_events("create_nginx_pod_privileged.json")[0]
    converted, gcp = convert(log_entry(audit))
    event = audit_event(converted, module="gke", source="gke", cluster=gcp["cluster"], location=gcp["logName"],
                        extra={"gcp": gcp})
    assert event.data["pod"]["privileged"] is True
    assert event.data["audit"]["source"] == "gke" and event.data["audit"]["cluster"] == "my-cluster"
    assert event.data["gcp"]["principalEmail"] == audit["user"]["username"]
    assert event.module == "gke" and event.data["integration"] == "k8s_audit"
