"""GKE Cloud Audit Log entries (`protoPayload.serviceName: k8s.io`) as audit.k8s.io Events.

After Falco's k8saudit-gke plugin (convert.go), so the same rules serve every cluster. GKE logs carry
no request URI query, no user groups and no audit stage: the stage is inferred (ResponseStarted for
exec/attach/portforward, else ResponseComplete) and the exec command stays unknown.
"""

from __future__ import annotations

from typing import Any

SERVICE = "k8s.io"
STREAMING_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})
NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
TRUNCATED_LABEL = "audit.k8s.io/truncated"
# google.rpc.Code -> HTTP status, as the API server would have answered.
RPC_TO_HTTP = {1: 499, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409, 11: 400, 12: 405,
               14: 503, 16: 401}


class NotAuditEntry(ValueError):
    """The message is not a Kubernetes Cloud Audit Log entry; the text says what is wrong."""


def convert(entry: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A LogEntry -> (the audit.k8s.io Event, the `gcp` block of the Vigil event)."""
    if not isinstance(entry, dict):
        raise NotAuditEntry(f"not a LogEntry: a JSON {type(entry).__name__}, not an object")
    payload = entry.get("protoPayload")
    if not isinstance(payload, dict):
        raise NotAuditEntry("not a Cloud Audit Log entry: no protoPayload object")
    if payload.get("serviceName") != SERVICE:
        raise NotAuditEntry(f"not a Kubernetes audit entry: serviceName is {payload.get('serviceName')!r}, "
                            f"not {SERVICE!r}")
    method = payload.get("methodName")
    if not isinstance(method, str) or not method:
        raise NotAuditEntry("Kubernetes audit entry without a methodName")
    verb = method.rsplit(".", 1)[-1]
    resource_name = _str(payload.get("resourceName"))
    object_ref = object_reference(resource_name)
    status = _dict(payload.get("status"))
    rpc_code = status.get("code", 0) if isinstance(status.get("code", 0), int) else 2
    streaming = object_ref.get("subresource") in STREAMING_SUBRESOURCES
    ok_code = 101 if streaming else 201 if verb == "create" else 200
    code = ok_code if rpc_code == 0 else RPC_TO_HTTP.get(rpc_code, 500)
    auth = _dict(payload.get("authenticationInfo"))
    meta = _dict(payload.get("requestMetadata"))
    labels = {str(k): v for k, v in _dict(entry.get("labels")).items()}
    timestamp = entry.get("timestamp") if isinstance(entry.get("timestamp"), str) else None
    audit_id = entry.get("insertId") or _dict(entry.get("operation")).get("id")
    event: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse" if "request" in payload or "response" in payload else "Metadata",
        "auditID": str(audit_id) if audit_id else "",
        "stage": "ResponseStarted" if streaming and code == 101 else "ResponseComplete",
        "requestURI": request_uri(resource_name, object_ref),
        "verb": verb,
        "user": {"username": str(auth.get("principalEmail") or auth.get("principalSubject") or "")},
        "sourceIPs": [str(meta["callerIp"])] if meta.get("callerIp") else [],
        "responseStatus": {"metadata": {}, "code": code},
        "annotations": labels,
    }
    if meta.get("callerSuppliedUserAgent"):
        event["userAgent"] = str(meta["callerSuppliedUserAgent"])
    if object_ref:
        event["objectRef"] = object_ref
    if rpc_code != 0 and status.get("message"):
        event["responseStatus"]["message"] = str(status["message"])
    if isinstance(payload.get("request"), dict):
        event["requestObject"] = payload["request"]
    if isinstance(payload.get("response"), dict):
        event["responseObject"] = payload["response"]
    if timestamp:
        event["requestReceivedTimestamp"] = timestamp
        event["stageTimestamp"] = timestamp
    return event, gcp_block(entry, payload, rpc_code, labels)


def object_reference(resource_name: str) -> dict[str, str]:
    """`core/v1/namespaces/NS/pods/NAME/exec` or `GROUP/v1/RESOURCE/NAME` (cluster-scoped) -> objectRef."""
    parts = [p for p in resource_name.split("/") if p]
    if len(parts) < 3:
        return {}
    group, version, rest = parts[0], parts[1], parts[2:]
    ref: dict[str, str] = {}
    if group != "core":
        ref["apiGroup"] = group
    ref["apiVersion"] = version
    if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in NAMESPACE_SUBRESOURCES):
        ref["namespace"] = rest[1]
        rest = rest[2:]
    for key, value in zip(("resource", "name", "subresource"), rest, strict=False):
        ref[key] = value
    return ref


def request_uri(resource_name: str, ref: dict[str, str]) -> str:
    """The request path the entry stands for (without a query: GKE does not log it)."""
    if not ref:
        return "/" + resource_name.strip("/")
    base = f"/apis/{ref['apiGroup']}/{ref['apiVersion']}" if "apiGroup" in ref else f"/api/{ref['apiVersion']}"
    path = [base]
    if "namespace" in ref and ref.get("resource") != "namespaces":
        path.append(f"namespaces/{ref['namespace']}")
    path.extend(ref[k] for k in ("resource", "name", "subresource") if k in ref)
    return "/".join(path)


def gcp_block(entry: dict[str, Any], payload: dict[str, Any], rpc_code: int, labels: dict[str, Any]) -> dict[str, Any]:
    """What the Vigil event says about where the entry came from."""
    resource_labels = _dict(_dict(entry.get("resource")).get("labels"))
    log_name = str(entry.get("logName") or "")
    project = resource_labels.get("project_id") or (log_name.split("/")[1] if log_name.startswith("projects/") else "")
    block: dict[str, Any] = {
        "project": str(project),
        "cluster": str(resource_labels.get("cluster_name") or ""),
        "location": str(resource_labels.get("location") or ""),
        "insertId": str(entry.get("insertId") or ""),
        "logName": log_name,
        "principalEmail": str(_dict(payload.get("authenticationInfo")).get("principalEmail") or ""),
        "status": rpc_code,
    }
    if entry.get("receiveTimestamp"):
        block["receiveTimestamp"] = str(entry["receiveTimestamp"])
    if str(labels.get(TRUNCATED_LABEL, "")).lower() == "true":
        block["truncated"] = True
    return block


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
