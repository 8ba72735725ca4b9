"""Every shipped Kubernetes audit rule (0570-kubernetes-audit.yml): an event that fires it and a near miss
that does not (house rule 3). Events are built in the shape a kube-apiserver sends them."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from vigil.agent.modules.kubernetes.audit_normalize import audit_event
from vigil.event import Event
from vigil.manager.analysis.engine import Step

from .support import analyzer, shipped_rules

ADMIN = "kubernetes-admin"
NGINX = {"name": "web", "image": "nginx:1.25"}


def audit(resource: str, verb: str = "create", *, ns: str | None = "default", name: str | None = "x",
          sub: str | None = None, user: str = ADMIN, code: int = 201, stage: str = "ResponseComplete",
          request: dict[str, Any] | None = None, uri: str | None = None, decision: str = "allow") -> dict[str, Any]:
    ref: dict[str, Any] = {"resource": resource, "apiVersion": "v1"}
    if ns:
        ref["namespace"] = ns
    if name:
        ref["name"] = name
    if sub:
        ref["subresource"] = sub
    obj: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse", "auditID": "id-1",
        "stage": stage, "verb": verb, "requestURI": uri or f"/api/v1/namespaces/{ns}/{resource}/{name}",
        "user": {"username": user, "groups": ["system:authenticated"]}, "sourceIPs": ["10.0.0.9"],
        "objectRef": ref, "responseStatus": {"metadata": {}, "code": code},
        "annotations": {"authorization.k8s.io/decision": decision, "authorization.k8s.io/reason": ""},
        "requestReceivedTimestamp": "2026-11-27T10:00:00.000000Z", "stageTimestamp": "2026-11-27T10:00:00.010000Z",
    }
    if request is not None:
        obj["requestObject"] = request
    return obj


def pod(spec_extra: dict[str, Any] | None = None, containers: list[dict[str, Any]] | None = None, *,
        ns: str = "default", user: str = "system:serviceaccount:kube-system:replicaset-controller",
        code: int = 201) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers or [dict(NGINX)], **(spec_extra or {})}
    return audit("pods", ns=ns, name=None, user=user, code=code,
                 request={"kind": "Pod", "apiVersion": "v1", "metadata": {"generateName": "web-"}, "spec": spec})


def workload(resource: str, kind: str, spec_extra: dict[str, Any] | None = None, verb: str = "create",
             user: str = ADMIN, privileged: bool = False) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": "busybox", "securityContext": {"privileged": privileged}}
    template = {"spec": {"containers": [container], **(spec_extra or {})}}
    return audit(resource, verb, name="w", user=user, code=201 if verb == "create" else 200,
                 request={"kind": kind, "metadata": {"name": "w"}, "spec": {"template": template}})


def exec_uri(*command: str, tty: bool) -> str:
    query = "&".join(f"command={c}" for c in command)
    return f"/api/v1/namespaces/default/pods/web/exec?{query}&container=web&stdin=true&tty={str(tty).lower()}"


def execs(sub: str, uri: str, stage: str = "ResponseStarted") -> dict[str, Any]:
    return audit("pods", name="web", sub=sub, code=101, stage=stage, uri=uri)


def role(resource: str, verbs: list[str], resources: list[str], name: str = "reader", verb: str = "create",
         code: int = 201) -> dict[str, Any]:
    return audit(resource, verb, ns=None, name=name, code=code, request={
        "kind": "ClusterRole", "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "verbs": verbs, "resources": resources}]})


def binding(role_ref: str, code: int = 201) -> dict[str, Any]:
    return audit("clusterrolebindings", ns=None, name="b", code=code, request={
        "kind": "ClusterRoleBinding", "metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": role_ref},
        "subjects": [{"kind": "User", "name": "mallory"}]})


def configmap(data: dict[str, str], verb: str = "create", code: int = 201) -> dict[str, Any]:
    return audit("configmaps", verb, name="cfg", code=code, request={"kind": "ConfigMap", "data": data})


def secret(verb: str, *, ns: str = "default", user: str = ADMIN, code: int = 201,
           request: dict[str, Any] | None = None) -> dict[str, Any]:
    return audit("secrets", verb, ns=ns, name="s", user=user, code=code, request=request)


TOKEN_SECRET = {"kind": "Secret", "type": "kubernetes.io/service-account-token",
                "metadata": {"name": "s", "annotations": {"kubernetes.io/service-account.name": "default"}}}
SYSTEM_ROLE = "system:kube-aggregator"

# rule id -> (an event that fires it, a near miss that does not)
CASES: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {
    200570: (audit("namespaces", ns=None, name="foo", user="system:anonymous", uri="/api/v1/namespaces"),
             audit("namespaces", "get", ns=None, name=None, user="system:anonymous", code=200, uri="/healthz")),
    200571: (audit("pods", "get", name="web", user="mallory", code=200),
             audit("pods", "get", name="web", user="kops", code=200)),
    200572: (audit("pods", "get", name="web", user="admin", code=200),
             audit("pods", "get", name="web", user="kops", code=200)),
    200510: (pod(), pod(code=403)),
    200511: (pod(containers=[dict(NGINX)], spec_extra={"initContainers": [
                {"name": "init", "image": "busybox", "securityContext": {"privileged": True}}]}),
             pod(containers=[{**NGINX, "securityContext": {"privileged": False}}])),
    200512: (pod({"volumes": [{"name": "sock", "hostPath": {"path": "/var/run/docker.sock"}}]}),
             pod({"volumes": [{"name": "logs", "hostPath": {"path": "/var/log/app"}}]})),
    200513: (pod({"hostNetwork": True}), pod({"hostNetwork": False})),
    200514: (pod({"hostPID": True}), pod({"hostPID": False})),
    200515: (pod({"hostIPC": True}), pod({"hostIPC": False})),
    200516: (pod(ns="kube-system"),
             pod(ns="kube-system", containers=[{"name": "a", "image": "registry.k8s.io/kube-apiserver:v1.30.0"}])),
    200517: (pod(code=403), audit("pods", "get", name="web", code=200)),
    200518: (pod(containers=[{**NGINX, "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]),
             pod(containers=[{**NGINX, "securityContext": {"capabilities": {"add": ["CHOWN"]}}}])),
    200520: (execs("exec", exec_uri("ls", "-l", tty=False)),
             execs("exec", exec_uri("ls", "-l", tty=False), stage="ResponseComplete")),
    200522: (execs("exec", exec_uri("bash", tty=True)), execs("exec", exec_uri("bash", tty=False))),
    200521: (execs("attach", "/api/v1/namespaces/default/pods/web/attach?container=web&stdin=true"),
             execs("attach", "/api/v1/namespaces/default/pods/web/attach?container=web", stage="RequestReceived")),
    200523: (execs("portforward", "/api/v1/namespaces/default/pods/web/portforward?ports=5432"),
             execs("portforward", "/api/v1/namespaces/default/pods/web/portforward", stage="ResponseComplete")),
    200524: (audit("pods", "patch", name="web", sub="ephemeralcontainers", code=200),
             audit("pods", "patch", name="web", sub="ephemeralcontainers", code=403)),
    200531: (binding("cluster-admin"), binding("view")),
    200533: (role("clusterroles", ["*"], ["pods"]), role("clusterroles", ["get"], ["pods"])),
    200538: (role("clusterroles", ["get"], ["*"]), role("clusterroles", ["get"], ["pods"])),
    200534: (role("clusterroles", ["get"], ["pods/exec"]), role("clusterroles", ["get"], ["pods/log"])),
    200535: (role("clusterroles", ["get", "delete"], ["pods"]), role("clusterroles", ["get", "list"], ["pods"])),
    200536: (role("clusterroles", [], [], name=SYSTEM_ROLE, verb="delete", code=200),
             role("clusterroles", [], [], name="system:coredns", verb="delete", code=200)),
    200530: (binding("view"), binding("view", code=409)),
    200532: (role("clusterroles", ["get"], ["pods"]), role("clusterroles", ["get"], ["pods"], code=403)),
    200537: (audit("roles", "delete", name="r", code=200), audit("roles", "get", name="r", code=200)),
    200541: (configmap({"db.properties": "user=app\npassword=hunter2"}), configmap({"ui.properties": "color=blue"})),
    200540: (configmap({"ui.properties": "color=blue"}), configmap({"ui.properties": "color=blue"}, code=409)),
    200542: (audit("configmaps", "delete", name="cfg", code=200), audit("configmaps", "delete", name="cfg", code=404)),
    200547: (secret("create", request=TOKEN_SECRET),
             secret("create", user="system:kube-controller-manager", request=TOKEN_SECRET)),
    200551: (audit("serviceaccounts", name="default", sub="token"),
             audit("serviceaccounts", name="default", sub="token", user="system:node:n1")),
    200545: (secret("create"), secret("create", ns="kube-system")),
    200546: (secret("delete", code=200), secret("delete", code=200, user="system:kube-controller-manager")),
    200548: (secret("get", code=200), secret("get", code=200, user="system:node:n1")),
    200549: (secret("get", ns="kube-system", code=200), secret("get", ns="default", code=200)),
    200550: (secret("get", code=403), secret("get", code=200, user="system:node:n1")),
    200556: (audit("serviceaccounts", ns="kube-system", name="myacct"),
             audit("serviceaccounts", ns="kube-system", name="coredns")),
    200555: (audit("serviceaccounts", name="myacct"), audit("serviceaccounts", name="myacct", code=409)),
    200557: (audit("serviceaccounts", "delete", name="myacct", code=200),
             audit("serviceaccounts", "delete", name="myacct", code=404)),
    200561: (audit("services", name="web", request={"kind": "Service", "spec": {"type": "NodePort"}}),
             audit("services", name="web", request={"kind": "Service", "spec": {"type": "ClusterIP"}})),
    200560: (audit("services", name="web"), audit("services", name="web", code=409)),
    200562: (audit("services", "delete", name="web", code=200), audit("services", "delete", name="web", code=500)),
    200566: (audit("namespaces", ns=None, name="foo"), audit("namespaces", ns=None, name="default", code=409)),
    200565: (audit("namespaces", ns=None, name="default"), audit("namespaces", ns=None, name="default", code=409)),
    200567: (audit("namespaces", "delete", ns=None, name="foo", code=200),
             audit("namespaces", "delete", ns=None, name="foo", code=200,
                   user="system:serviceaccount:kube-system:namespace-controller")),
    200580: (audit("ingresses", name="web", request={"kind": "Ingress", "spec": {"rules": []}}),
             audit("ingresses", name="web", request={"kind": "Ingress", "spec": {"tls": [{"secretName": "t"}]}})),
    200581: (audit("nodes", ns=None, name="n9", user="kops"),
             audit("nodes", "get", ns=None, name="n9", code=200, user="kops")),
    200579: (workload("daemonsets", "DaemonSet", privileged=True), workload("daemonsets", "DaemonSet")),
    200582: (workload("deployments", "Deployment", {"volumes": [{"name": "e", "hostPath": {"path": "/etc"}}]}),
             workload("deployments", "Deployment", {"volumes": [{"name": "d", "hostPath": {"path": "/data"}}]})),
    200583: (workload("daemonsets", "DaemonSet", {"hostPID": True}), workload("daemonsets", "DaemonSet")),
    200578: (audit("validatingwebhookconfigurations", ns=None, name="hook"),
             audit("validatingwebhookconfigurations", ns=None, name="hook", user="system:apiserver")),
    200576: (workload("deployments", "Deployment"), audit("deployments", name="w", code=422)),
    200577: (audit("deployments", "delete", name="w", code=200), audit("deployments", "delete", name="w", code=404)),
    200575: (workload("daemonsets", "DaemonSet", verb="update"),
             workload("daemonsets", "DaemonSet", verb="update",
                      user="system:serviceaccount:kube-system:daemon-set-controller")),
}


def to_event(obj: dict[str, Any]) -> Event:
    return audit_event(copy.deepcopy(obj), module="kubernetes", source="webhook", cluster="test",
                       location="k8s-audit")


def example_events() -> list[Event]:
    """One firing event per Kubernetes audit rule, for the house test in test_docker_rules."""
    return [to_event(fire) for fire, _ in CASES.values()]


def test_every_kubernetes_audit_rule_has_a_case() -> None:
    ours = {rid for rid in shipped_rules().rules if 200500 <= rid <= 200599}
    assert ours - set(CASES) == {200500, 200501, 200502}  # the roots, reached by every case


@pytest.mark.parametrize("rid", sorted(CASES))
def test_rule_fires_and_its_near_miss_does_not(rid: int) -> None:
    level = shipped_rules().rules[rid].level
    fire, miss = CASES[rid]
    fired = analyzer().analyse(to_event(fire))
    trace: list[Step] = []
    missed = analyzer().analyse(to_event(miss), trace)
    assert (rid, "matched") not in {(step.rule_id, step.outcome) for step in trace}
    if level == 0:  # off by default (as in Falco): matched, but never an alert
        assert rid in fired.match.chain
        assert fired.alert is None or fired.alert["rule"]["id"] != str(rid)
        assert rid not in missed.match.chain
        return
    assert fired.alert is not None and fired.alert["rule"]["id"] == str(rid), fired.match.rule
    assert fired.alert["rule"]["level"] == level
    assert "()" not in fired.alert["rule"]["description"]
    assert missed.alert is None or missed.alert["rule"]["id"] != str(rid)
    assert rid not in missed.match.chain


def test_request_received_never_alerts() -> None:
    obj = execs("exec", exec_uri("bash", tty=True), stage="RequestReceived")
    assert analyzer().analyse(to_event(obj)).alert is None


def test_exec_alert_says_who_ran_what_where() -> None:
    alert = analyzer().analyse(to_event(execs("exec", exec_uri("bash", tty=True)))).alert
    assert alert is not None
    assert alert["rule"]["description"] == (
        "Kubernetes: interactive shell in pod default/web container web by kubernetes-admin: bash")
    assert alert["data"]["kubernetes"] == {"namespace": "default", "pod": "web", "container": "web"}
    assert alert["rule"]["mitre"]["id"] == ["T1609", "T1059.004"]


def test_privileged_pod_alert_names_the_container_and_mitre() -> None:
    alert = analyzer().analyse(to_event(CASES[200511][0])).alert
    assert alert is not None
    assert alert["rule"]["description"] == ("Kubernetes: privileged pod default/web- created by "
                                            "system:serviceaccount:kube-system:replicaset-controller "
                                            "(containers init, images nginx:1.25, busybox)")
    assert alert["rule"]["mitre"]["id"] == ["T1611", "T1610"]
    assert alert["rule"]["mitre"]["technique"] == ["Escape to Host", "Deploy Container"]


def test_trusted_privileged_image_is_excepted_but_another_privileged_container_is_not() -> None:
    trusted = {"name": "falco", "image": "falcosecurity/falco:0.38", "securityContext": {"privileged": True}}
    evil = {"name": "evil", "image": "evil/tool", "securityContext": {"privileged": True}}
    for containers, rule in [([trusted], "200510"), ([evil], "200511"), ([trusted, evil], "200511")]:
        alert = analyzer().analyse(to_event(pod(containers=containers))).alert
        assert alert is not None and alert["rule"]["id"] == rule
