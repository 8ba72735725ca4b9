"""The Kubernetes manifests in deploy/kubernetes: valid objects for old and new Kubernetes (Kubernetes' own
schemas, strict), the DaemonSet's node access as documented, read-only RBAC, a configuration Vigil
accepts, an audit policy that logs what the rules read, and shell entries that call real `vigil` options."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from vigil.config import VigilConfig
from vigil.config_kubernetes import WatchConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))
NO_SCHEMA = {"audit-policy.yaml", "audit-webhook-kubeconfig.yaml"}  # not API objects: checked below
VERSIONS = ["1.29.0", "1.33.0", "1.37.0"]  # kubernetes-validate 1.37 bundles 1.25 to 1.37
STAGES = {"RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"}
LEVELS = ["None", "Metadata", "Request", "RequestResponse"]


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d is not None]


def objects() -> list[dict[str, Any]]:
    return [d for path in MANIFESTS if path.name not in NO_SCHEMA for d in docs(path.name)]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    [found] = [o for o in objects() if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return found


def pod_spec(kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = one(kind)["spec"]["template"]["spec"]
    return spec


def config(key: str) -> VigilConfig:
    return VigilConfig.model_validate(yaml.safe_load(one("ConfigMap", "vigil-config")["data"][key]))


def test_the_documented_files_are_shipped() -> None:
    assert {p.name for p in MANIFESTS} == {
        "namespace.yaml", "rbac.yaml", "configmap.yaml", "manager.yaml", "agent-daemonset.yaml",
        "audit-policy.yaml", "audit-webhook-kubeconfig.yaml"}
    assert (DEPLOY / "README.md").is_file() and (DEPLOY / "Dockerfile").is_file()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", [p for p in MANIFESTS if p.name not in NO_SCHEMA], ids=lambda p: p.name)
def test_every_object_is_valid_for_kubernetes(path: Path, version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    found = docs(path.name)
    assert found, f"{path.name} holds no object"
    for doc in found:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{path.name} {doc.get('kind')}: {exc.message} at {list(exc.path)}")


def test_the_validation_is_strict_enough_to_catch_a_typo() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    daemonset = yaml.safe_load((DEPLOY / "agent-daemonset.yaml").read_text())
    daemonset["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesytem"] = True
    with pytest.raises(kv.ValidationError):
        kv.validate(daemonset, VERSIONS[0], strict=True)


def test_namespaced_objects_are_in_the_vigil_namespace() -> None:
    assert docs("namespace.yaml")[0]["metadata"]["name"] == "vigil"
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for obj in objects():
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"].get("namespace") == "vigil", obj["metadata"]["name"]


def test_the_agent_runs_on_every_node_including_the_control_plane() -> None:
    tolerations = pod_spec("DaemonSet")["tolerations"]
    for key in ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"):
        assert any(t.get("key") in (key, None) and t["operator"] == "Exists" and t.get("effect") in ("NoSchedule", None)
                   for t in tolerations), key
    assert "nodeSelector" not in pod_spec("DaemonSet") and "affinity" not in pod_spec("DaemonSet")


def test_the_agent_is_named_after_its_node_and_knows_the_node_address() -> None:
    [container] = pod_spec("DaemonSet")["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["HOST_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    script = container["args"][0]
    assert '--name "$NODE_NAME"' in script
    # Enroll once (no identity yet), then run.
    assert script.index("identity/identity.json") < script.index("vigil agent enroll") < script.index(
        "exec vigil agent run")


def test_host_logs_are_mounted_read_only_and_only_the_agent_state_is_writable() -> None:
    spec = pod_spec("DaemonSet")
    [container] = spec["containers"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert set(host_paths.values()) == {"/var/log", "/var/log/pods", "/var/log/containers", "/var/lib/vigil-agent"}
    for name, path in host_paths.items():
        assert mounts[name]["mountPath"] == path
        assert mounts[name].get("readOnly", False) is (path != "/var/lib/vigil-agent"), path
    agent = config("agent.yml")
    assert str(agent.data_dir) == "/var/lib/vigil-agent" and str(agent.logs.cri_dir) == "/var/log/containers"
    # No container runtime socket: the agent does not need one, and it is as good as root on the node.
    assert not [p for p in host_paths.values() if p.endswith(".sock") or "containerd" in p or "docker" in p]


@pytest.mark.parametrize("kind", ["DaemonSet", "StatefulSet"])
def test_containers_are_unprivileged_with_requests_and_limits(kind: str) -> None:
    spec = pod_spec(kind)
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context.get("privileged", False) is False
        assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert set(context["capabilities"].get("add", [])) <= {"DAC_READ_SEARCH"}
        resources = container["resources"]
        assert set(resources["requests"]) == {"cpu", "memory"} and set(resources["limits"]) == {"cpu", "memory"}


def test_receivers_listen_where_the_host_ports_lead() -> None:
    [container] = pod_spec("DaemonSet")["containers"]
    ports = {(p["containerPort"], p["protocol"]): p.get("hostPort") for p in container["ports"]}
    agent = config("agent.yml")
    syslog, http_logs = agent.logs.syslog, agent.kubernetes.http_logs
    assert syslog.enabled and http_logs.enabled and agent.logs.cri_logs
    assert ports[(syslog.udp_port, "UDP")] == 514 and ports[(syslog.tcp_port, "TCP")] == 514
    assert ports[(http_logs.port, "TCP")] == http_logs.port
    # Bound in the pod's own network namespace, so the hostPort (the node's address) reaches them.
    assert syslog.host == http_logs.host == "0.0.0.0"


def test_rbac_is_read_only_and_covers_exactly_what_the_watch_reads() -> None:
    role = one("ClusterRole")
    resources = set()
    for rule in role["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
        assert "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        resources.update(rule["resources"])
    assert resources == set(WatchConfig().resources)
    binding = one("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "vigil-manager", "namespace": "vigil"}]
    assert pod_spec("StatefulSet")["serviceAccountName"] == "vigil-manager"
    # The agent: its own account, bound to nothing, no token.
    assert pod_spec("DaemonSet")["serviceAccountName"] == "vigil-agent"
    assert pod_spec("DaemonSet")["automountServiceAccountToken"] is False
    assert one("ServiceAccount", "vigil-agent")["automountServiceAccountToken"] is False
    assert not [o for o in objects() if o["kind"] in ("RoleBinding", "ClusterRoleBinding")
                and any(s["name"] == "vigil-agent" for s in o["subjects"])]


@pytest.mark.parametrize("key", ["manager.yml", "agent.yml"])
def test_the_configuration_is_one_vigil_accepts(key: str) -> None:
    raw = yaml.safe_load(one("ConfigMap", "vigil-config")["data"][key])
    VigilConfig.model_validate(raw)
    raw["kubernetes"]["bogus"] = True
    with pytest.raises(ValueError, match="bogus"):
        VigilConfig.model_validate(raw)


def test_manager_ports_storage_and_names_agree_with_its_configuration() -> None:
    manager = config("manager.yml")
    statefulset, service = one("StatefulSet"), one("Service", "vigil-manager")
    assert statefulset["spec"]["replicas"] == 1 and statefulset["spec"]["serviceName"] == "vigil-manager"
    [container] = pod_spec("StatefulSet")["containers"]
    wanted = {"channel": manager.manager.channel_port, "enrollment": manager.manager.enrollment_port,
              "api": manager.api.port, "audit-webhook": manager.kubernetes.audit_webhook.port}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == wanted
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == wanted == {
        "channel": 1514, "enrollment": 1515, "api": 7555, "audit-webhook": 7556}
    assert manager.api.host == manager.kubernetes.audit_webhook.host == manager.manager.listen_host == "0.0.0.0"
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == str(manager.data_dir)
    assert str(manager.enrollment_secret_path).startswith(mounts["enroll"] + "/")
    # The name agents enroll with is in the manager's certificate.
    agent_script = pod_spec("DaemonSet")["containers"][0]["args"][0]
    enrolled_with = re.search(r"--manager (\S+)", agent_script)
    assert enrolled_with is not None and enrolled_with[1] in manager.manager.server_names


def _vigil_calls(script: str) -> list[list[str]]:
    joined = script.replace("\\\n", " ")
    calls = []
    for line in joined.splitlines():
        words = shlex.split(line.strip(), comments=True)
        if "vigil" in words and not words[0].startswith("echo"):
            calls.append(words[words.index("vigil") + 1:])
    return calls


@pytest.mark.parametrize("kind", ["DaemonSet", "StatefulSet"])
def test_entry_scripts_are_valid_shell_and_call_real_vigil_options(kind: str) -> None:
    [container] = pod_spec(kind)["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    script = container["args"][0]
    syntax = subprocess.run(["/bin/sh", "-n", "-c", script], capture_output=True, text=True, timeout=30)
    assert syntax.returncode == 0, syntax.stderr
    calls = _vigil_calls(script)
    assert calls, "no vigil command"
    for call in calls:
        command = [w for w in call if not w.startswith("-")][:2]
        command = command[:1] if command[0] == "manager" else command
        help_text = subprocess.run([sys.executable, "-m", "vigil", *command, "--help"], capture_output=True,
                                   text=True, timeout=60)
        assert help_text.returncode == 0, help_text.stderr
        for option in (w for w in call if w.startswith("--")):
            assert option in help_text.stdout, f"`vigil {' '.join(command)}` has no {option}"


def _level(policy: dict[str, Any], verb: str, group: str, resource: str, user: str = "alice",
           groups: tuple[str, ...] = ("system:authenticated",)) -> str:
    """The level of the first rule that matches a resource request, as kube-apiserver picks it."""
    for rule in policy["rules"]:
        if "nonResourceURLs" in rule:
            continue
        if rule.get("users") and user not in rule["users"]:
            continue
        if rule.get("userGroups") and not set(groups) & set(rule["userGroups"]):
            continue
        if rule.get("verbs") and verb not in rule["verbs"]:
            continue
        if "resources" in rule and not any(
                r.get("group", "") == group and (not r.get("resources") or resource in r["resources"])
                for r in rule["resources"]):
            continue
        level: str = rule["level"]
        return level
    return "None"


def test_audit_policy_logs_what_the_rules_read_and_no_secret_content() -> None:
    [policy] = docs("audit-policy.yaml")
    assert (policy["apiVersion"], policy["kind"]) == ("audit.k8s.io/v1", "Policy")
    assert set(policy) <= {"apiVersion", "kind", "metadata", "rules", "omitStages", "omitManagedFields"}
    assert policy["omitStages"] == ["RequestReceived"]
    rule_keys = {"level", "users", "userGroups", "verbs", "resources", "namespaces", "nonResourceURLs",
                 "omitStages", "omitManagedFields"}
    for rule in policy["rules"]:
        assert set(rule) <= rule_keys and rule["level"] in LEVELS, rule
        assert set(rule.get("omitStages", [])) <= STAGES
        for res in rule.get("resources", []):
            assert set(res) <= {"group", "resources", "resourceNames"}, res
        assert not ("resources" in rule and "nonResourceURLs" in rule)
    assert policy["rules"][-1] == {"level": "Metadata"}  # everything else: who did what, no bodies
    expected = [
        ("create", "", "pods/exec", "RequestResponse"), ("get", "", "pods/exec", "RequestResponse"),
        ("create", "", "pods/attach", "RequestResponse"), ("create", "", "pods", "RequestResponse"),
        ("patch", "", "pods/ephemeralcontainers", "RequestResponse"),
        ("create", "rbac.authorization.k8s.io", "clusterrolebindings", "RequestResponse"),
        ("create", "rbac.authorization.k8s.io", "roles", "RequestResponse"),
        ("create", "", "secrets", "Metadata"), ("get", "", "secrets", "Metadata"),
        ("create", "", "serviceaccounts/token", "Metadata"),
        ("create", "", "configmaps", "Request"), ("get", "", "configmaps", "Metadata"),
        ("create", "", "services", "Request"), ("create", "apps", "deployments", "Request"),
        ("create", "networking.k8s.io", "ingresses", "Request"), ("list", "", "pods", "Metadata"),
        ("update", "coordination.k8s.io", "leases", "None"),
    ]
    assert [(v, g, r, _level(policy, v, g, r)) for v, g, r, _ in expected] == expected
    # Anonymous requests are never dropped: the "anonymous request allowed" rule needs them.
    anonymous = [r for r in policy["rules"] if r["level"] == "None" and "nonResourceURLs" in r
                 and not r.get("userGroups")]
    assert {url for r in anonymous for url in r["nonResourceURLs"]} <= {"/healthz*", "/livez*", "/readyz*"}


def test_webhook_kubeconfig_template_has_the_shape_vigil_writes() -> None:
    from vigil.cli.k8s import webhook_kubeconfig

    [template] = docs("audit-webhook-kubeconfig.yaml")
    made = yaml.safe_load(webhook_kubeconfig("https://10.96.0.42:7556/k8s-audit", b"CA", (b"C", b"K"), None))

    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shape(v) for v in value]
        return type(value).__name__

    assert shape(template) == shape(made)
    server = urlsplit(template["clusters"][0]["cluster"]["server"])
    manager = config("manager.yml").kubernetes.audit_webhook
    assert (server.scheme, server.path, server.port) == ("https", manager.path, manager.port)
    contexts = {c["name"]: c["context"] for c in template["contexts"]}
    context = contexts[template["current-context"]]
    assert context["cluster"] in {c["name"] for c in template["clusters"]}
    assert context["user"] in {u["name"] for u in template["users"]}
    # The manager's entry makes the real one at that path, for the Service's address.
    script = pod_spec("StatefulSet")["containers"][0]["args"][0]
    assert "/var/lib/vigil/k8s-audit/webhook-kubeconfig.yaml" in script
    assert ":7556/k8s-audit" in script


def test_dockerfile_copies_what_exists_and_runs_vigil() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    root = DEPLOY.parents[1]
    for line in text.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (root / source).exists(), source
    assert 'ENTRYPOINT ["vigil"]' in text and "USER 10001" in text
    assert pod_spec("StatefulSet")["securityContext"]["runAsUser"] == 10001
