"""Pure: one object seen by the Kubernetes API watch -> a Vigil Event (integration `k8s_watch`).

The object is kept as the API server sent it, except that Secrets are reduced to their metadata and
type (values never reach an alert or the archive) and `managedFields` is dropped everywhere (it only
repeats field names). Flat blocks (`pod`, `rbac`) come from posture.py so YAML rules can test what is
inside lists of containers. Every input may be hostile: wrong types give empty values, never raise.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple

from vigil.agent.modules.kubernetes.posture import pod_posture, rbac_summary, workload_pod_spec
from vigil.event import AgentRef, Event

INTEGRATION = "k8s_watch"

# plural resource -> (Kind, apiVersion); the watched kinds and the only ones the module accepts.
RESOURCES: dict[str, tuple[str, str]] = {
    "pods": ("Pod", "v1"),
    "configmaps": ("ConfigMap", "v1"),
    "secrets": ("Secret", "v1"),
    "namespaces": ("Namespace", "v1"),
    "serviceaccounts": ("ServiceAccount", "v1"),
    "services": ("Service", "v1"),
    "deployments": ("Deployment", "apps/v1"),
    "daemonsets": ("DaemonSet", "apps/v1"),
    "statefulsets": ("StatefulSet", "apps/v1"),
    "replicasets": ("ReplicaSet", "apps/v1"),
    "jobs": ("Job", "batch/v1"),
    "cronjobs": ("CronJob", "batch/v1"),
    "roles": ("Role", "rbac.authorization.k8s.io/v1"),
    "rolebindings": ("RoleBinding", "rbac.authorization.k8s.io/v1"),
    "clusterroles": ("ClusterRole", "rbac.authorization.k8s.io/v1"),
    "clusterrolebindings": ("ClusterRoleBinding", "rbac.authorization.k8s.io/v1"),
    "mutatingwebhookconfigurations": ("MutatingWebhookConfiguration", "admissionregistration.k8s.io/v1"),
    "validatingwebhookconfigurations": ("ValidatingWebhookConfiguration", "admissionregistration.k8s.io/v1"),
}
RBAC_KINDS = frozenset({"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"})
# kubectl apply copies the whole object, Secret values included, into this annotation.
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_LEADER = "control-plane.alpha.kubernetes.io/leader"


class Seen(NamedTuple):
    """What the watch remembers of an object: enough to tell a real change from a status update."""

    resource_version: str
    content: str  # digest of everything but status and bookkeeping metadata
    posture: str  # digest of the derived pod/rbac blocks
    namespace: str = ""
    name: str = ""  # both kept to report a deletion found by listing again


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def reduce_object(resource: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The object as stored in the event: no managedFields; a Secret keeps only metadata and type."""
    kind, api_version = RESOURCES.get(resource, ("", ""))
    metadata = dict(_dict(obj.get("metadata")))
    metadata.pop("managedFields", None)
    out = {k: v for k, v in obj.items() if k != "metadata"}
    out.setdefault("kind", kind)  # list items come without kind and apiVersion
    out.setdefault("apiVersion", api_version)
    if resource == "secrets":
        annotations = {k: v for k, v in _dict(metadata.get("annotations")).items() if k != _LAST_APPLIED}
        if "annotations" in metadata:
            metadata["annotations"] = annotations
        out = {"kind": out["kind"], "apiVersion": out["apiVersion"], "type": obj.get("type")}
    out["metadata"] = metadata
    return out


def identity(obj: dict[str, Any]) -> tuple[str, str]:
    """(uid, resourceVersion) of an object, empty when missing or not text."""
    metadata = _dict(obj.get("metadata"))
    return _text(metadata.get("uid")), _text(metadata.get("resourceVersion"))


def content_digest(obj: dict[str, Any]) -> str:
    """Changes when anything but status and bookkeeping changes (a real edit, not a status update)."""
    metadata = {k: v for k, v in _dict(obj.get("metadata")).items()
                if k not in ("resourceVersion", "managedFields", "generation")}
    annotations = _dict(metadata.get("annotations"))
    if _LEADER in annotations:  # renewed every few seconds by leader election on old clusters
        rest = {k: v for k, v in annotations.items() if k != _LEADER}
        metadata.pop("annotations")
        if rest:
            metadata["annotations"] = rest
    # kind and apiVersion: list items come without them, watch events with them
    return _digest([metadata, {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}])


def watch_event(resource: str, event_type: str, obj: dict[str, Any], *, cluster: str,
                previous: Seen | None = None, relisted: bool = False,
                agent: AgentRef | None = None, when: float = 0.0) -> tuple[Event, Seen]:
    """The Event for one watched object, and what to remember of it for the next change."""
    kind = RESOURCES.get(resource, ("", ""))[0]
    reduced = reduce_object(resource, obj)
    metadata = reduced["metadata"]
    namespace, name = _text(metadata.get("namespace")), _text(metadata.get("name"))
    uid, version = identity(obj)
    target = f"{namespace}/{name}" if namespace else name
    data: dict[str, Any] = {"integration": INTEGRATION}
    full = {**obj, "kind": kind}
    spec = workload_pod_spec(full)
    if spec is not None:
        data["pod"] = pod_posture(spec)
    if kind in RBAC_KINDS:
        data["rbac"] = rbac_summary(full)
    seen = Seen(version, content_digest(obj), _digest([data.get("pod"), data.get("rbac")]), namespace, name)
    # With nothing known before, ADDED/EXISTING are new posture; a MODIFIED (first seen after a restart) is not
    # reported as one, or every privileged pod would alert again on its next status update.
    posture_changed = previous.posture != seen.posture if previous is not None else event_type != "MODIFIED"
    data["watch"] = {
        "type": event_type, "resource": resource, "kind": kind, "namespace": namespace, "name": name,
        "uid": uid, "resource_version": version, "target": target, "relisted": relisted,
        "spec_changed": previous is None or event_type != "MODIFIED" or previous.content != seen.content,
        "posture_changed": posture_changed,
    }
    data["object"] = reduced
    if kind == "Pod":
        data["kubernetes"] = {"namespace": namespace, "pod": name}
    data["audit"] = {"source": "watch", "cluster": cluster, "target": target, "resource": resource}
    event = Event(module="kubernetes", location=f"k8s_watch:{cluster}", timestamp=when, decoder="json",
                  agent=agent or AgentRef(), data=data)
    return event, seen
