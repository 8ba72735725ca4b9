"""Pure: a pod spec or an RBAC object -> flat facts that YAML rules can test.

Rule field paths stop at lists of objects, so `spec.containers[*].securityContext.privileged` cannot
be written in a rule; these blocks flatten what matters (a condition on a list holds if any element
does). Shared by the audit normalizer and the API watch. Every input may be hostile: wrong types are
skipped, never raised on.
"""

from __future__ import annotations

from typing import Any, Final

_CONTAINER_LISTS: Final = ("containers", "initContainers", "ephemeralContainers")
_TEMPLATE_KINDS: Final = frozenset({"Deployment", "DaemonSet", "StatefulSet", "ReplicaSet",
                                    "ReplicationController", "Job", "PodTemplate"})


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _strs(value: Any) -> list[str]:
    return [v for v in _list(value) if isinstance(v, str)]


def pod_posture(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """Security-relevant settings over containers, init containers and ephemeral containers."""
    privileged: list[str] = []
    privileged_images: list[str] = []
    images: list[str] = []
    caps: list[str] = []
    escalation: list[str] = []
    run_as_root: list[str] = []
    for key in _CONTAINER_LISTS:
        for container in _list(pod_spec.get(key)):
            if not isinstance(container, dict):
                continue
            name = container.get("name")
            label = name if isinstance(name, str) else "?"
            context = _dict(container.get("securityContext"))
            if context.get("privileged") is True:
                privileged.append(label)
                if isinstance(container.get("image"), str):
                    privileged_images.append(image_repository(container["image"]))
            if context.get("allowPrivilegeEscalation") is True:
                escalation.append(label)
            if context.get("runAsUser") == 0:
                run_as_root.append(label)
            image = container.get("image")
            if isinstance(image, str) and image not in images:
                images.append(image)
            for cap in _strs(_dict(context.get("capabilities")).get("add")):
                cap = cap.upper().removeprefix("CAP_")
                if cap not in caps:
                    caps.append(cap)
    host_paths: list[str] = []
    for volume in _list(pod_spec.get("volumes")):
        path = _dict(_dict(volume).get("hostPath")).get("path")
        if isinstance(path, str):
            host_paths.append(clean_path(path))
    repositories = [image_repository(i) for i in images]
    account = pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount")
    return {
        "privileged": bool(privileged),
        "privileged_containers": privileged,
        "privileged_image_repositories": privileged_images,
        "host_paths": host_paths,
        "host_network": pod_spec.get("hostNetwork") is True,
        "host_pid": pod_spec.get("hostPID") is True,
        "host_ipc": pod_spec.get("hostIPC") is True,
        "images": images,
        "image_repositories": repositories,
        # Allowlist exceptions match these: every repository of the pod (of its privileged containers),
        # sorted and joined with ",", so one trusted image cannot vouch for another beside it.
        "image_set": ",".join(sorted(set(repositories))),
        "privileged_image_set": ",".join(sorted(set(privileged_images))),
        "capabilities_added": caps,
        "allow_privilege_escalation": escalation,
        "run_as_root": run_as_root,
        "service_account": account if isinstance(account, str) else None,
    }


def workload_pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a Pod, or the pod template's spec of a workload (CronJob: its job's template)."""
    kind = obj.get("kind")
    if not isinstance(kind, str):
        kind = None
    spec = _dict(obj.get("spec"))
    if kind == "CronJob":
        spec = _dict(_dict(_dict(spec.get("jobTemplate")).get("spec")))
        kind = "Job"
    if kind == "PodTemplate":
        spec = _dict(_dict(obj.get("template")).get("spec"))
        return spec or None
    if kind in _TEMPLATE_KINDS or (kind is None and "template" in spec):
        template = _dict(_dict(spec.get("template")).get("spec"))
        return template or None
    if kind in ("Pod", None) and any(isinstance(spec.get(k), list) for k in _CONTAINER_LISTS):
        return spec
    return None


def rbac_summary(obj: dict[str, Any]) -> dict[str, Any]:
    """Role/ClusterRole rules and (Cluster)RoleBinding roleRef/subjects, as flat lists."""
    verbs: list[str] = []
    resources: list[str] = []
    api_groups: list[str] = []
    for rule in _list(obj.get("rules")):
        rule = _dict(rule)
        for value, into in ((rule.get("verbs"), verbs), (rule.get("resources"), resources),
                           (rule.get("apiGroups"), api_groups)):
            for item in _strs(value):
                if item not in into:
                    into.append(item)
    subjects: list[str] = []
    for subject in _list(obj.get("subjects")):
        subject = _dict(subject)
        name = subject.get("name")
        if not isinstance(name, str):
            continue
        namespace = subject.get("namespace")
        kind = subject.get("kind")
        where = f"{namespace}/{name}" if isinstance(namespace, str) and namespace else name
        subjects.append(f"{kind}:{where}" if isinstance(kind, str) else where)
    out: dict[str, Any] = {"verbs": verbs, "resources": resources, "api_groups": api_groups,
                           "subjects": subjects}
    ref = _dict(obj.get("roleRef"))
    if isinstance(ref.get("name"), str):
        out["role_ref"] = ref["name"]
        if isinstance(ref.get("kind"), str):
            out["role_ref_kind"] = ref["kind"]
    return out


def image_repository(image: str) -> str:
    """`registry:5000/ns/nginx:1.25@sha256:...` -> `registry:5000/ns/nginx`."""
    image = image.split("@", 1)[0]
    slash = image.rfind("/")
    colon = image.rfind(":")
    return image[:colon] if colon > slash else image


def clean_path(path: str) -> str:
    """`//var/run//docker.sock/` -> `/var/run/docker.sock`, so path rules need one spelling."""
    parts = [p for p in path.split("/") if p and p != "."]
    return "/" + "/".join(parts)
