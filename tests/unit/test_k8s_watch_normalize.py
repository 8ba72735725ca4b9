"""The Kubernetes watch's normalizer (object -> Event) and its rules (0575): each rule fires on an example
and stays quiet on a near miss; hostile objects never raise; Secret values never reach an event."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError

from vigil.agent.modules.kubernetes.watch_normalize import Seen, reduce_object, watch_event
from vigil.config_kubernetes import WatchConfig
from vigil.event import Event

from .support import analyzer

CLUSTER = "prod-eu"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
CONTAINERD = "/run/containerd/containerd.sock"


def named(name: str, namespace: str = "") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": "3"}}


def pod(name: str = "web-1", namespace: str = "default", rv: str = "100", **spec: Any) -> dict[str, Any]:
    containers = spec.pop("containers", [{"name": "app", "image": "nginx:1.25"}])
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": rv,
                         "creationTimestamp": "2026-11-27T10:00:00Z"},
            "spec": {"containers": containers, **spec}, "status": {"phase": "Running"}}


def privileged(name: str = "web-1", image: str = "nginx:1.25") -> list[dict[str, Any]]:
    return [{"name": "app", "image": "nginx:1.25"},
            {"name": name, "image": image, "securityContext": {"privileged": True}}]


def deployment(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "api", "namespace": "shop", "uid": "uid-api", "resourceVersion": "7", "generation": 2},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "api", "image": "api:1"}], **spec}}},
            "status": {"readyReplicas": 2}}


def binding(role: str = "cluster-admin", name: str = "ops-admin") -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": "9"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]}


def role(verbs: list[str], resources: list[str], name: str = "power") -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": "11"},
            "rules": [{"apiGroups": [""], "resources": resources, "verbs": verbs}]}


def secret(namespace: str = "default", kind: str = "Opaque") -> dict[str, Any]:
    return {"metadata": {"name": "db", "namespace": namespace, "uid": "uid-db", "resourceVersion": "12",
                         "annotations": {LAST_APPLIED: '{"data":{"pw":"c2VjcmV0"}}', "team": "shop"},
                         "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:data": {"f:pw": {}}}}]},
            "type": kind, "data": {"pw": "c2VjcmV0"}, "stringData": {"token": "hunter2"}}


def event(resource: str, event_type: str, obj: dict[str, Any], previous: Seen | None = None) -> Event:
    return watch_event(resource, event_type, obj, cluster=CLUSTER, previous=previous)[0]


def seen(resource: str, obj: dict[str, Any]) -> Seen:
    return watch_event(resource, "ADDED", obj, cluster=CLUSTER)[1]


def rule_of(ev: Event) -> int | None:
    match = analyzer().analyse(ev).match
    return match.rule.id if match.rule is not None and match.rule.level > 0 else None


# (name, firing event, expected rule, near-miss event) for every rule of 0575
def cases() -> list[tuple[str, Event, int, Event]]:
    calm = pod()
    priv = pod(containers=privileged())
    priv_existing_system = pod(namespace="kube-system", containers=privileged())
    return [
        ("pod added", event("pods", "ADDED", calm), 200601, event("pods", "MODIFIED", calm)),
        ("privileged pod", event("pods", "ADDED", priv), 200602,
         event("pods", "MODIFIED", priv, previous=seen("pods", priv))),
        ("privileged pod at first start", event("pods", "EXISTING", priv), 200602,
         event("pods", "EXISTING", priv_existing_system)),
        ("privileged workload template", event("deployments", "MODIFIED", deployment(containers=privileged()),
                                               previous=seen("deployments", deployment())), 200602,
         event("pods", "ADDED", pod(containers=privileged("proxy", "registry.k8s.io/kube-proxy:v1.30.0")))),
        ("sensitive hostPath", event("pods", "ADDED", pod(volumes=[{"name": "h", "hostPath": {"path": "/etc/"}}])),
         200603, event("pods", "ADDED", pod(volumes=[{"name": "h", "hostPath": {"path": "/etc/nginx"}}]))),
        ("socket hostPath", event("pods", "EXISTING", pod(volumes=[{"hostPath": {"path": CONTAINERD}}])), 200603,
         event("pods", "EXISTING", pod(volumes=[{"hostPath": {"path": "/data"}}]))),
        ("host network", event("pods", "ADDED", pod(hostNetwork=True)), 200604,
         event("pods", "ADDED", pod(hostNetwork=False))),
        ("host pid", event("daemonsets", "ADDED", deployment(hostPID=True)), 200606,
         event("daemonsets", "DELETED", deployment(hostPID=True))),
        ("host ipc", event("pods", "ADDED", pod(hostIPC=True)), 200607, event("pods", "ADDED", pod(hostIPC="yes"))),
        ("pod in kube-system", event("pods", "ADDED", pod(namespace="kube-system")), 200605,
         event("pods", "EXISTING", pod(namespace="kube-system"))),
        ("cluster-admin binding", event("clusterrolebindings", "ADDED", binding()), 200611,
         event("clusterrolebindings", "ADDED", binding("view"))),
        ("default cluster-admin binding changed",
         event("clusterrolebindings", "MODIFIED", binding(name="cluster-admin"),
               previous=seen("clusterrolebindings", binding("view"))), 200611,
         event("clusterrolebindings", "EXISTING", binding(name="cluster-admin"))),
        ("wildcard verbs", event("clusterroles", "ADDED", role(["*"], ["pods"])), 200612,
         event("clusterroles", "EXISTING", role(["*"], ["*"], name="cluster-admin"))),
        ("wildcard resources", event("roles", "EXISTING", role(["get"], ["*"])), 200616,
         event("roles", "EXISTING", role(["get"], ["pods"]))),
        ("secret added", event("secrets", "ADDED", secret()), 200613, event("secrets", "ADDED", secret("kube-system"))),
        ("secret deleted", event("secrets", "DELETED", secret()), 200613,
         event("secrets", "DELETED", secret(kind="kubernetes.io/service-account-token"))),
        ("namespace added", event("namespaces", "ADDED", named("crypto")), 200614,
         event("namespaces", "EXISTING", named("crypto"))),
        ("configmap modified", event("configmaps", "MODIFIED", {**named("cfg", "shop"), "data": {"a": "1"}}), 200610,
         event("configmaps", "EXISTING", named("cfg", "shop"))),
    ]


def example_events() -> list[Event]:
    """For the house test: an event that fires each rule of 0575 (and 200006)."""
    gap = Event(module="k8s_watch", location="k8s_watch:c", timestamp=0.0, decoder="vigil",
                data={"vigil": {"module": "k8s_watch", "kind": "possible_gap", "error": "resourceVersion 5 expired"}})
    return [firing for _name, firing, _rule, _miss in cases()] + [gap]


@pytest.mark.parametrize("case", cases(), ids=lambda c: c[0])
def test_each_rule_fires_and_its_near_miss_does_not(case: tuple[str, Event, int, Event]) -> None:
    _name, firing, rule, near_miss = case
    assert rule_of(firing) == rule
    assert rule_of(near_miss) != rule


def test_a_gap_is_a_vigil_alert() -> None:
    gap = example_events()[-1]
    alert = analyzer().analyse(gap).alert
    assert alert is not None and alert["rule"]["id"] == "200006"
    assert "resourceVersion 5 expired" in alert["rule"]["description"]


def test_alert_says_what_and_where() -> None:
    alert = analyzer().analyse(event("pods", "ADDED", pod(containers=privileged("miner")))).alert
    assert alert is not None
    assert alert["rule"]["description"] == (
        "Kubernetes watch: privileged Pod default/web-1 (ADDED): containers miner, images nginx:1.25")
    assert alert["data"]["kubernetes"] == {"namespace": "default", "pod": "web-1"}
    assert alert["data"]["audit"]["cluster"] == CLUSTER
    assert alert["rule"]["mitre"]["id"] == ["T1611", "T1610"]


def test_event_shape_for_a_list_item_without_kind() -> None:
    ev, remembered = watch_event("pods", "ADDED", pod(rv="240010"), cluster=CLUSTER, when=5.0)
    assert (ev.module, ev.decoder, ev.location, ev.timestamp) == ("kubernetes", "json", f"k8s_watch:{CLUSTER}", 5.0)
    watch = ev.data["watch"]
    assert {k: watch[k] for k in ("type", "kind", "resource", "namespace", "name", "resource_version")} == {
        "type": "ADDED", "kind": "Pod", "resource": "pods", "namespace": "default", "name": "web-1",
        "resource_version": "240010"}
    assert ev.data["object"]["kind"] == "Pod" and ev.data["object"]["apiVersion"] == "v1"
    assert ev.data["pod"]["images"] == ["nginx:1.25"]
    assert remembered.resource_version == "240010" and remembered.name == "web-1"


def test_secret_values_never_reach_the_event() -> None:
    ev = event("secrets", "ADDED", secret())
    text = json.dumps(ev.to_dict())
    for value in ("c2VjcmV0", "hunter2", "last-applied", "managedFields", '"pw"'):
        assert value not in text
    assert ev.data["object"] == {"kind": "Secret", "apiVersion": "v1", "type": "Opaque",
                                 "metadata": {"name": "db", "namespace": "default", "uid": "uid-db",
                                              "resourceVersion": "12", "annotations": {"team": "shop"}}}


def test_status_updates_are_not_changes_but_edits_are() -> None:
    before = seen("deployments", deployment())
    status = deployment()
    status["status"] = {"readyReplicas": 1}
    status["metadata"]["resourceVersion"] = "8"
    assert event("deployments", "MODIFIED", status, before).data["watch"]["spec_changed"] is False
    edited = deployment()
    edited["spec"]["replicas"] = 3
    watch = event("deployments", "MODIFIED", edited, before).data["watch"]
    assert watch["spec_changed"] is True and watch["posture_changed"] is False
    leader = copy.deepcopy(status)
    leader["metadata"]["annotations"] = {"control-plane.alpha.kubernetes.io/leader": '{"renewTime":"now"}'}
    assert event("deployments", "MODIFIED", leader, before).data["watch"]["spec_changed"] is False


def test_first_sight_of_a_modified_object_is_not_new_posture() -> None:
    """After a restart the watch resumes with nothing remembered: a status update of an old privileged pod
    must not alert again."""
    ev = event("pods", "MODIFIED", pod(containers=privileged()))
    assert ev.data["watch"]["posture_changed"] is False
    assert rule_of(ev) is None


@pytest.mark.parametrize("garbage", [
    {}, {"metadata": 5}, {"metadata": {"name": 3, "namespace": ["x"], "uid": None}, "spec": "oops"},
    {"metadata": {"name": "p"}, "spec": {"containers": [5, None, {"securityContext": "x", "image": 7}],
                                         "volumes": [1, {"hostPath": "x"}], "hostNetwork": "true"}},
    {"metadata": {"name": "r"}, "rules": "all", "subjects": [None], "roleRef": []},
])
@pytest.mark.parametrize("resource", ["pods", "deployments", "clusterrolebindings", "roles", "secrets", "cronjobs"])
def test_garbage_typed_fields_never_raise(garbage: dict[str, Any], resource: str) -> None:
    ev = event(resource, "ADDED", garbage)
    assert ev.data["integration"] == "k8s_watch"
    json.dumps(ev.to_dict())
    analyzer().analyse(ev)


def test_reduce_object_keeps_other_objects_whole() -> None:
    obj = pod()
    obj["metadata"]["managedFields"] = [{"manager": "kubelet"}]
    reduced = reduce_object("pods", obj)
    assert "managedFields" not in reduced["metadata"]
    assert reduced["spec"] == obj["spec"] and reduced["status"] == obj["status"]
    assert "managedFields" in obj["metadata"]  # the input is not changed


def test_config_names_only_resources_the_watch_knows() -> None:
    with pytest.raises(ValidationError, match=r"unknown resource\(s\) \['podz'\]"):
        WatchConfig(resources=["pods", "podz"])
    assert WatchConfig(resources=["pods", "pods", "secrets"]).resources == ["pods", "secrets"]
    assert WatchConfig().report_existing is True
