"""audit_event and posture: the flat blocks rules match on, and robustness to hostile field types."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import pytest

from vigil.agent.modules.kubernetes.audit_normalize import audit_event, event_time, exec_info, problem_event
from vigil.agent.modules.kubernetes.posture import image_repository, pod_posture, rbac_summary, workload_pod_spec
from vigil.event import AgentRef


def norm(obj: dict[str, Any], **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"module": "kubernetes", "source": "webhook", "cluster": "prod", "location": "k8s-audit"}
    args.update(kw)
    return audit_event(obj, **args).data


def pod_create(spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {"kind": "Event", "auditID": "1", "stage": "ResponseComplete", "verb": "create",
            "objectRef": {"resource": "pods", "namespace": namespace},
            "user": {"username": "alice"}, "responseStatus": {"code": 201},
            "requestObject": {"kind": "Pod", "metadata": {"name": "web-1"}, "spec": spec}}


def test_envelope_keeps_the_event_as_sent_and_says_who_did_what() -> None:
    obj = pod_create({"containers": [{"name": "a", "image": "nginx"}]})
    event = audit_event(obj, module="eks", source="eks", cluster="prod", location="eks:prod",
                        agent=AgentRef("001", "node"), extra={"aws": {"log_group": "g"}})
    assert event.decoder == "json" and event.module == "eks" and event.agent.id == "001"
    assert event.data["integration"] == "k8s_audit"
    assert event.data["k8s"] is obj
    assert event.data["audit"] == {"source": "eks", "cluster": "prod", "actor": "alice", "target": "default/web-1",
                                   "resource": "pods", "verb": "create", "user": "alice",
                                   "iam_identity": "", "ok": True, "system_user": False}
    assert event.data["kubernetes"] == {"namespace": "default", "pod": "web-1"}
    assert event.data["aws"] == {"log_group": "g"}


def test_exec_command_comes_from_repeated_command_parameters() -> None:
    uri = ("/api/v1/namespaces/default/pods/web/exec?command=%2Fbin%2Fsh&command=-c&command=cat+%2Fetc%2Fshadow"
           "&container=app&container=app&stdin=true&stdout=true&tty=true")
    obj = {"stage": "ResponseStarted", "verb": "create", "requestURI": uri,
           "objectRef": {"resource": "pods", "subresource": "exec", "namespace": "default", "name": "web"}}
    data = norm(obj)
    assert data["exec"] == {"command": "/bin/sh -c cat /etc/shadow", "program": "sh",
                            "args": ["-c", "cat /etc/shadow"], "container": "app", "tty": True, "stdin": True}
    assert data["audit"]["resource"] == "pods/exec"
    assert data["kubernetes"] == {"namespace": "default", "pod": "web", "container": "app"}


def test_exec_program_looks_through_wrappers_and_attach_has_no_command() -> None:
    assert exec_info("/x/exec?command=env&command=FOO%3D1&command=bash")["program"] == "bash"
    assert exec_info("/x/attach?container=c&stdin=1") == {
        "command": "", "program": "", "args": [], "container": "c", "tty": False, "stdin": True}


@pytest.mark.parametrize("where", ["containers", "initContainers", "ephemeralContainers"])
def test_privileged_in_second_init_or_ephemeral_container(where: str) -> None:
    spec: dict[str, Any] = {"containers": [{"name": "plain", "image": "nginx:1.25"}]}
    spec.setdefault(where, []).append({"name": "bad", "image": "r.io/x/tool@sha256:ab",
                                       "securityContext": {"privileged": True,
                                                           "capabilities": {"add": ["cap_sys_admin"]}}})
    pod = norm(pod_create(spec))["pod"]
    assert pod["privileged"] is True and pod["privileged_containers"] == ["bad"]
    assert pod["images"] == ["nginx:1.25", "r.io/x/tool@sha256:ab"]
    assert pod["image_repositories"] == ["nginx", "r.io/x/tool"]
    assert pod["image_set"] == "nginx,r.io/x/tool" and pod["privileged_image_set"] == "r.io/x/tool"
    assert pod["privileged_image_repositories"] == ["r.io/x/tool"]
    assert pod["capabilities_added"] == ["SYS_ADMIN"]


def test_host_paths_and_host_namespaces() -> None:
    spec = {"hostNetwork": True, "hostPID": True, "hostIPC": False, "serviceAccountName": "builder",
            "containers": [{"name": "a", "image": "x"}],
            "volumes": [{"name": "s", "hostPath": {"path": "//var/run//docker.sock"}}, {"name": "e", "emptyDir": {}}]}
    pod = norm(pod_create(spec))["pod"]
    assert pod["host_paths"] == ["/var/run/docker.sock"]
    assert (pod["host_network"], pod["host_pid"], pod["host_ipc"]) == (True, True, False)
    assert pod["service_account"] == "builder"


def test_unprivileged_pod_says_so() -> None:
    pod = pod_posture({"containers": [{"name": "a", "image": "nginx", "securityContext": {"privileged": False}}]})
    assert pod["privileged"] is False and pod["privileged_containers"] == [] and pod["host_paths"] == []


@pytest.mark.parametrize(("kind", "obj"), [
    ("Deployment", {"spec": {"template": {"spec": {"containers": [{"name": "d"}]}}}}),
    ("DaemonSet", {"spec": {"template": {"spec": {"containers": [{"name": "d"}]}}}}),
    ("StatefulSet", {"spec": {"template": {"spec": {"containers": [{"name": "d"}]}}}}),
    ("Job", {"spec": {"template": {"spec": {"containers": [{"name": "d"}]}}}}),
    ("CronJob", {"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "d"}]}}}}}}),
    ("Pod", {"spec": {"containers": [{"name": "d"}]}}),
])
def test_workload_templates_give_their_pod_spec(kind: str, obj: dict[str, Any]) -> None:
    assert workload_pod_spec({"kind": kind, **obj}) == {"containers": [{"name": "d"}]}


def test_workload_posture_is_computed_for_a_daemonset() -> None:
    obj = {"stage": "ResponseComplete", "verb": "create", "objectRef": {"resource": "daemonsets", "namespace": "ops"},
           "requestObject": {"kind": "DaemonSet", "metadata": {"name": "agent"}, "spec": {"template": {"spec": {
               "hostPID": True, "containers": [{"name": "c", "securityContext": {"privileged": True}}]}}}}}
    data = norm(obj)
    assert data["pod"]["privileged"] is True and data["pod"]["host_pid"] is True
    assert data["audit"]["target"] == "ops/agent"
    assert "kubernetes" not in data  # a workload is not a pod: no "where it runs"


def test_not_a_workload_gives_no_pod_block() -> None:
    assert workload_pod_spec({"kind": "DeleteOptions"}) is None
    assert workload_pod_spec({"kind": "Deployment", "spec": {"template": 3}}) is None


def test_rbac_summary_of_roles_and_bindings() -> None:
    role = {"rules": [{"verbs": ["get", "*"], "resources": ["pods/exec"], "apiGroups": [""]},
                      {"verbs": ["get"], "resources": ["secrets"]}, "junk"]}
    assert rbac_summary(role) == {"verbs": ["get", "*"], "resources": ["pods/exec", "secrets"], "api_groups": [""],
                                  "subjects": []}
    binding = {"roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
               "subjects": [{"kind": "User", "name": "bob"}, {"kind": "ServiceAccount", "name": "x", "namespace": "n"}]}
    summary = rbac_summary(binding)
    assert summary["role_ref"] == "cluster-admin" and summary["subjects"] == ["User:bob", "ServiceAccount:n/x"]


def test_configmap_entries_are_key_value_cut_at_4_kib() -> None:
    obj = {"verb": "create", "objectRef": {"resource": "configmaps", "namespace": "d", "name": "c"},
           "requestObject": {"data": {"db": "password=hunter2", "big": "x" * 10_000, "n": 5},
                             "binaryData": {"b": "AAAA"}}}
    entries = norm(obj)["configmap"]["entries"]
    assert entries[0] == "db=password=hunter2"
    assert len(entries[1]) == 4096 and entries[1].startswith("big=xxx")
    assert entries[2:] == ["n=5", "b=AAAA"]


def test_delete_options_give_no_derived_blocks() -> None:
    obj = {"verb": "delete", "objectRef": {"resource": "clusterroles", "name": "r"},
           "requestObject": {"kind": "DeleteOptions", "apiVersion": "v1"}}
    data = norm(obj)
    assert "rbac" not in data and data["audit"]["target"] == "r"


def test_eks_iam_arn_becomes_the_iam_identity_and_aws_iam_arn() -> None:
    obj = {"verb": "get", "user": {"username": "kubernetes-admin",
                                   "extra": {"arn": ["arn:aws:iam::111122223333:role/admin"],
                                             "canonicalArn": ["arn:aws:iam::111122223333:role/admin"]}}}
    data = norm(obj, extra={"aws": {"log_stream": "kube-apiserver-audit-1"}})
    assert data["audit"]["iam_identity"] == "arn:aws:iam::111122223333:role/admin"
    assert data["audit"]["actor"] == "kubernetes-admin (arn:aws:iam::111122223333:role/admin)"
    assert data["aws"] == {"log_stream": "kube-apiserver-audit-1", "iam_arn": "arn:aws:iam::111122223333:role/admin"}


def test_timestamp_from_stage_then_request_received() -> None:
    at = audit_event({"stageTimestamp": "2026-11-27T10:00:00.123456789Z",
                      "requestReceivedTimestamp": "2020-01-01T00:00:00Z"},
                     module="k", source="file", cluster="", location="l").timestamp
    assert at == pytest.approx(1795773600.123456)
    at = audit_event({"stageTimestamp": "garbage", "requestReceivedTimestamp": "2020-01-01T00:00:00Z"},
                     module="k", source="file", cluster="", location="l").timestamp
    assert at == 1577836800.0


def test_empty_event_never_renders_empty_descriptions() -> None:
    audit = norm({})["audit"]
    assert audit["actor"] == "(unknown user)" and audit["target"] == "(unknown object)"
    assert audit["resource"] == "(unknown resource)"


GARBAGE: list[Any] = [None, 0, 1.5, True, "x", [], [1, None, "a", {}], {"a": [None]}]


@pytest.mark.parametrize("junk", GARBAGE)
def test_garbage_typed_fields_never_raise(junk: Any) -> None:
    keys = ["objectRef", "user", "requestObject", "requestURI", "verb", "stage", "stageTimestamp",
            "requestReceivedTimestamp", "responseStatus", "annotations", "auditID"]
    for resource in ["pods", "deployments", "cronjobs", "clusterroles", "configmaps", "secrets"]:
        base = {"objectRef": {"resource": resource, "subresource": "exec", "namespace": junk, "name": junk},
                "requestURI": "/x?command=sh", "user": {"username": junk, "extra": {"arn": junk}},
                "requestObject": {"kind": junk, "metadata": junk, "spec": {
                    "containers": [junk, {"securityContext": junk, "image": junk}],
                    "volumes": [junk, {"hostPath": junk}],
                    "template": {"spec": {"containers": junk}}, "jobTemplate": junk},
                    "rules": [junk], "subjects": [junk], "roleRef": junk, "data": junk}}
        audit_event(base, module="k", source="s", cluster="c", location="l")
        for key in keys:
            audit_event({**base, key: junk}, module="k", source="s", cluster="c", location="l")
    pod_posture({"containers": junk, "initContainers": [junk], "volumes": junk, "hostNetwork": junk})
    rbac_summary({"rules": junk, "subjects": junk, "roleRef": junk})


def test_image_repository_keeps_registry_ports() -> None:
    assert image_repository("registry:5000/ns/app:1.0") == "registry:5000/ns/app"
    assert image_repository("registry:5000/ns/app") == "registry:5000/ns/app"


def test_problem_event_feeds_the_vigil_health_rules() -> None:
    event = problem_event("kubernetes", "k8s-audit", "events_dropped", "too large",
                          details={"count": 2, "excerpt": "{...", "kind": "ignored"})
    assert event.decoder == "vigil" and event.raw == "{..."
    assert event.data["vigil"] == {"module": "kubernetes", "kind": "events_dropped", "error": "too large",
                                   "count": 2, "excerpt": "{..."}


@pytest.mark.parametrize(("code", "user", "ok", "system"), [
    (201, "alice", True, False), (403, "system:node:n1", False, True), ("200", "bob", False, False),
    (None, "system:anonymous", False, True)])
def test_ok_and_system_user_flags(code: Any, user: str, ok: bool, system: bool) -> None:
    audit = norm({"verb": "get", "user": {"username": user}, "responseStatus": {"code": code}})["audit"]
    assert (audit["ok"], audit["system_user"]) == (ok, system)


def test_resource_names_the_subresource_so_rules_can_tell_pods_from_pods_exec() -> None:
    ref: dict[str, Any] = {"resource": "serviceaccounts", "namespace": "n", "name": "sa"}
    base = {"verb": "create", "objectRef": ref}
    assert norm(base)["audit"]["resource"] == "serviceaccounts"
    ref["subresource"] = "token"
    assert norm(base)["audit"]["resource"] == "serviceaccounts/token"


@pytest.mark.parametrize("query", [
    "command=sh&command=-c&command=id&container=app&tty=true", "a=1&&b=&c", "x=%2Fbin%2Fsh+-c&y=a+b%zz", "",
    "=v&k=", "command=%E2%82%AC", "a=b=c", "&&&", "k=%ff", "command=echo+%26%26+id",
])
def test_exec_commands_read_as_parse_qsl_reads_them(query: str) -> None:
    words = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "command"]
    assert exec_info(f"/api/v1/namespaces/d/pods/p/exec?{query}")["command"] == " ".join(words)


def test_event_time_is_what_fromisoformat_gives_to_the_bit() -> None:
    rng = random.Random(5)
    samples = ["2026-11-27T10:00:00Z", "2026-11-27T10:00:00.123456789Z", "2026-11-27T10:00:00.12+02:00",
               "2019-04-04T17:43:34.5Z", "2019-04-04T17:43:34.000001Z"]
    for _ in range(20_000):
        second = datetime.fromtimestamp(rng.randrange(0, 4_000_000_000), UTC).strftime("%Y-%m-%dT%H:%M:%S")
        samples.append(f"{second}.{rng.randrange(10**6):0{rng.randint(1, 6)}d}Z")
    for text in samples:
        assert event_time({"stageTimestamp": text}) == datetime.fromisoformat(text).timestamp(), text


@pytest.mark.parametrize("bad", ["2026-13-27T10:00:00.1Z", "garbage", "2026-11-27T10:00:00.\uff11\uff12Z", ""])
def test_an_unreadable_time_falls_back_to_the_next_field(bad: str) -> None:
    assert event_time({"stageTimestamp": bad, "requestReceivedTimestamp": "2026-11-27T10:00:00.5Z"}) == (
        datetime.fromisoformat("2026-11-27T10:00:00.5Z").timestamp())
