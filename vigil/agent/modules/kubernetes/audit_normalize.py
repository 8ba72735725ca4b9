"""Pure: one audit.k8s.io Event -> a Vigil Event, with flat blocks that YAML rules can match.

`data.k8s` is the audit event as sent. Vigil adds `audit{...}` (who did what to which object, so
descriptions never render empty), `exec{...}` parsed from the requestURI of pods/exec and attach,
`pod{...}` for pods and workload templates, `rbac{...}`, `configmap{entries}` and
`kubernetes{namespace, pod}` (where the workload runs, as for container logs). The input is hostile:
any field may have any type, and nothing here raises on an object.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Final
from urllib.parse import unquote

import msgspec

from vigil.agent.modules.docker.normalize import program_of
from vigil.agent.modules.kubernetes.posture import pod_posture, rbac_summary, workload_pod_spec
from vigil.event import AgentRef, Event

INTEGRATION: Final = "k8s_audit"
CONFIGMAP_ENTRY_BYTES: Final = 4096
_WORKLOADS: Final = frozenset({"pods", "deployments", "daemonsets", "statefulsets", "replicasets", "jobs",
                               "cronjobs", "replicationcontrollers", "podtemplates"})
_RBAC: Final = frozenset({"roles", "clusterroles", "rolebindings", "clusterrolebindings"})
_LOCAL_AGENT: Final = AgentRef()
_EMPTY: Final[dict[str, Any]] = {}
_TRUE: Final = frozenset({"true", "1", "True"})


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def audit_event(obj: dict[str, Any], *, module: str, source: str, cluster: str, location: str,
                agent: AgentRef | None = None, extra: dict[str, Any] | None = None,
                sent: msgspec.Raw | None = None) -> Event:
    """The envelope for one audit event; `extra` ({"aws": ...} / {"gcp": ...}) is merged into data.
    `sent`: the JSON `obj` was parsed from (audit_payload.as_sent), which its alert then carries."""
    # Inline type checks rather than helper calls: this runs for every audit event (bench/k8s_audit_throughput.py).
    ref = obj.get("objectRef")
    if type(ref) is not dict:
        ref = _EMPTY
    resource = ref.get("resource")
    resource = resource if type(resource) is str else ""
    subresource = ref.get("subresource")
    subresource = subresource if type(subresource) is str else ""
    namespace = ref.get("namespace")
    namespace = namespace if type(namespace) is str else ""
    name = ref.get("name")
    name = name if type(name) is str else ""
    user = obj.get("user")
    if type(user) is not dict:
        user = _EMPTY
    username = user.get("username")
    username = username if type(username) is str else ""
    iam = _iam_identity(user) if "extra" in user else ""
    status = obj.get("responseStatus")
    code = status.get("code") if type(status) is dict else None
    request = obj.get("requestObject")
    if type(request) is not dict or request.get("kind") == "DeleteOptions":
        request = None
    if resource == "namespaces":
        namespace = ""
    if not name and request is not None:
        meta = _dict(request.get("metadata"))
        name = _str(meta.get("name")) or _str(meta.get("generateName"))
    data: dict[str, Any] = {
        "integration": INTEGRATION,
        "k8s": obj,
        "audit": {
            "source": source,
            "cluster": cluster,
            "actor": f"{username} ({iam})" if iam and iam != username else (username or "(unknown user)"),
            "target": _target(namespace, name, obj),
            "resource": f"{resource}/{subresource}" if subresource else (resource or "(unknown resource)"),
            "verb": verb if type(verb := obj.get("verb")) is str else "",
            "user": username,
            "iam_identity": iam,
            # Falco's response_successful and non_system_user macros, as plain values that rules can
            # index on (cheaper than a regex per rule, and present on every event).
            "ok": type(code) is int and 200 <= code < 300,
            "system_user": username.startswith("system:"),
        },
    }
    if extra:
        data.update(extra)
        aws = data.get("aws")
        if iam and isinstance(aws, dict) and "iam_arn" not in aws:
            data["aws"] = {**aws, "iam_arn": iam}
    if resource == "pods":
        data["kubernetes"] = _where(namespace, name, request)
        if subresource in ("exec", "attach"):
            data["exec"] = exec_info(_str(obj.get("requestURI")))
            container = data["exec"]["container"]
            if container:
                data["kubernetes"]["container"] = container
    if request is not None:
        if resource in _WORKLOADS:
            spec = workload_pod_spec(request)
            if spec is not None:
                data["pod"] = pod_posture(spec)
        elif resource in _RBAC:
            data["rbac"] = rbac_summary(request)
        elif resource == "configmaps":
            data["configmap"] = {"entries": configmap_entries(request)}
    return Event(module=module, location=location, timestamp=event_time(obj), data=data, decoder="json",
                 agent=agent or _LOCAL_AGENT, verbatim=None if sent is None else {"k8s": sent})


def _iam_identity(user: dict[str, Any]) -> str:
    """EKS puts the caller's IAM ARN in `user.extra.arn` (and `canonicalArn`), each a list of one."""
    extra = _dict(user.get("extra"))
    for key in ("arn", "canonicalArn"):
        value = extra.get(key)
        if isinstance(value, list) and value and isinstance(value[0], str):
            return value[0]
        if isinstance(value, str) and value:
            return value
    return ""


def _target(namespace: str, name: str, obj: dict[str, Any]) -> str:
    if namespace and name:
        return f"{namespace}/{name}"
    if name or namespace:
        return name or namespace
    uri = _str(obj.get("requestURI")).split("?", 1)[0]
    return uri or "(unknown object)"


def _where(namespace: str, name: str, request: Any) -> dict[str, Any]:
    meta = _dict(_dict(request).get("metadata"))
    return {"namespace": namespace or _str(meta.get("namespace")), "pod": name}


def exec_info(uri: str) -> dict[str, Any]:
    """`/api/v1/.../exec?command=sh&command=-c&command=id&container=app&tty=true` -> command, program, ...

    The API server logs the command only in the query string, one `command=` per argv word.
    """
    query = uri.split("?", 1)[1] if "?" in uri else ""
    words: list[str] = []
    container = ""
    tty = stdin = False
    for key, value in _query_pairs(query):
        if key == "command":
            words.append(value)
        elif key == "container" and not container:
            container = value
        elif key == "tty":
            tty = value in _TRUE
        elif key == "stdin":
            stdin = value in _TRUE
    split = " ".join(words).split()
    return {"command": " ".join(words), "program": program_of(split) if split else "", "args": words[1:],
            "container": container, "tty": tty, "stdin": stdin}


def _query_pairs(query: str) -> list[tuple[str, str]]:
    """urllib.parse.parse_qsl(query, keep_blank_values=True), as a loop that compiles (parse_qsl
    itself stays interpreted, and took most of the time of an exec event)."""
    pairs: list[tuple[str, str]] = []
    for part in query.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((_unquote_plus(key), _unquote_plus(value)))
    return pairs


def _unquote_plus(text: str) -> str:
    text = text.replace("+", " ")
    return unquote(text) if "%" in text else text  # unquote is interpreted: called only when needed


def configmap_entries(obj: dict[str, Any]) -> list[str]:
    """`data` and `binaryData` as `key=value` (each cut at 4 KiB), so a rule can regex keys and values."""
    entries: list[str] = []
    for block in ("data", "binaryData"):
        for key, value in _dict(obj.get(block)).items():
            text = value if isinstance(value, str) else repr(value)
            entries.append(f"{key}={text}"[:CONFIGMAP_ENTRY_BYTES])
    return entries


def event_time(obj: dict[str, Any]) -> float:
    """stageTimestamp, else requestReceivedTimestamp (RFC 3339, micro- or nanoseconds), else now."""
    for key in ("stageTimestamp", "requestReceivedTimestamp", "timestamp"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            when = _utc_time(value)
            if when is not None:
                return when
    return time.time()


_SECONDS: Final[dict[str, int]] = {}  # "2026-11-27T10:00:00" -> its epoch second (bounded: see _utc_time)


def _utc_time(text: str) -> float | None:
    """What datetime.fromisoformat(text).timestamp() gives, to the bit. The API server writes
    `2026-11-27T10:00:00.123456Z`, and events come many to a second: each second is parsed once,
    then only its microseconds are read."""
    digits = text[20:-1]
    usual = len(text) > 20 and text[19] == "." and text[-1] == "Z"
    if usual and 0 < len(digits) <= 6 and digits.isascii() and digits.isdigit():
        second = _SECONDS.get(text[:19])
        if second is None:
            try:
                second = int(datetime.fromisoformat(text[:19] + "+00:00").timestamp())
            except ValueError:
                return None
            if len(_SECONDS) >= 4096:
                _SECONDS.clear()
            _SECONDS[text[:19]] = second
        # timedelta.total_seconds()'s own formula, so the result is the same float.
        return (second * 1_000_000 + int(digits.ljust(6, "0"))) / 1_000_000
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def problem_event(module: str, location: str, kind: str, message: str, *, agent: AgentRef | None = None,
                  details: dict[str, Any] | None = None) -> Event:
    """A Vigil health event (malformed_input -> 200001, events_dropped -> 200003, ...)."""
    vigil: dict[str, Any] = {"module": module, "kind": kind, "error": message}
    if details:
        vigil.update({k: v for k, v in details.items() if k not in ("module", "kind")})
    excerpt = vigil.get("excerpt")
    return Event(module=module, location=location, timestamp=time.time(), decoder="vigil",
                 data={"vigil": vigil}, raw=excerpt if isinstance(excerpt, str) else None,
                 agent=agent or _LOCAL_AGENT)
