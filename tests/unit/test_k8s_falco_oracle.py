"""Falco's own k8s_audit test suite as an external oracle for the shipped Kubernetes audit rules.

/work/shared/fixtures/k8s-audit/falco-traces/manifest.json lists, per captured audit event, the Falco
rules its tests expect. Each event goes through the same path as a webhook body: parse_payload ->
audit_event -> Analyzer. For a positive case every expected Falco rule's Vigil counterpart must be
"matched" in the engine's trace and the alert must come from one of them; for a negative case no
alert of level >= 3 may come out, with user rules that do what Falco's extra rule files did
(tests/fixtures/k8s_user_rules/README.md).
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from vigil.agent.modules.kubernetes.audit_normalize import audit_event
from vigil.agent.modules.kubernetes.audit_payload import AuditPayloadError, parse_payload
from vigil.manager.analysis.engine import Step
from vigil.manager.analysis.rule_loader import LoadedRules, load_rules, shipped_rules_dir

from .support import SHARED, analyzer

TRACES = SHARED / "fixtures" / "k8s-audit" / "falco-traces"
USER_RULES = Path(__file__).resolve().parents[1] / "fixtures" / "k8s_user_rules"
RULE_FILE = shipped_rules_dir() / "0570-kubernetes-audit.yml"

# Falco rule name -> the Vigil rules that do its job (refinements that may win: 200522 under 200520).
FALCO_TO_VIGIL: dict[str, set[int]] = {
    "Anonymous Request Allowed": {200570},
    "Attach to cluster-admin Role": {200531},
    "Attach/Exec Pod": {200520, 200521, 200522},
    "ClusterRole With Pod Exec Created": {200534},
    "ClusterRole With Wildcard Created": {200533, 200538},
    "ClusterRole With Write Privileges Created": {200535},
    "K8s ClusterRole Created": {200532},
    "K8s ClusterRoleBinding Created": {200530},
    "K8s ConfigMap Created": {200540},
    "Create/Modify Configmap With Private Credentials": {200541},
    "K8s Deployment Created": {200576},
    "Create HostNetwork Pod": {200513},
    "Create Privileged Pod": {200511},
    "Create Sensitive Mount Pod": {200512},
    "Create Disallowed Pod": {200517},
    "Create NodePort Service": {200561},
    "Pod Created in Kube Namespace": {200516},
    "K8s Secret Created": {200545},
    "K8s Service Created": {200560},
    "K8s Serviceaccount Created": {200555},
    "Service Account Created in Kube Namespace": {200556},
    "System ClusterRole Modified/Deleted": {200536},
    "K8s ClusterRole Deleted": {200537},
    "K8s ClusterRoleBinding Deleted": {200537},
    "K8s ConfigMap Deleted": {200542},
    "K8s Deployment Deleted": {200577},
    "K8s Namespace Deleted": {200567},
    "K8s Secret Deleted": {200546},
    "K8s Service Deleted": {200562},
    "K8s Serviceaccount Deleted": {200557},
    "Create Disallowed Namespace": {200566},
    "Disallowed K8s User": {200571},
    "K8s Namespace Created": {200565},
}
# A test-only rule of Falco's suite (K8SAuditSingleRuleWithJsonPointer); Vigil has no counterpart.
NO_COUNTERPART = {"json_pointer_example"}
# Falco's extra rule files -> the user rule directory that does the same here.
EXTRA_FILES = {
    "K8SAuditAllowNamespaceFoo": "allow_namespace_foo",
    "K8SAuditTrustNginxContainer": "trust_nginx",
    "K8SAuditAllowUserSomeUser": "allow_user_some_user",
    "K8SAuditAllowOnlyApacheContainer": "allow_only_apache",
    "K8SAuditEngineV4AllowOnlyApacheContainer": "allow_only_apache",
    "K8SAuditDisallowKactivity": "disallow_kactivity",
}
# Rules that are off by default (as in Falco) and need a user dir to be switched on.
NEEDS_USER_DIR = {"Create Disallowed Pod": "allow_only_apache"}


def manifest() -> list[dict[str, Any]]:
    path = TRACES / "manifest.json"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    entries: list[dict[str, Any]] = orjson.loads(path.read_bytes())
    return entries


def _entries(positive: bool) -> list[dict[str, Any]]:
    try:
        entries = manifest()
    except pytest.skip.Exception:
        return []
    return [e for e in entries if e["events"] and bool(e["expected_rules"]) == positive]


def disallow_kactivity(directory: Path) -> None:
    """Every shipped k8s_activity rule overwritten at level 0, generated so it never drifts."""
    doc = yaml.safe_load(RULE_FILE.read_text())
    rules = [{**rule, "overwrite": True, "level": 0} for rule in doc["rules"] if "k8s_activity" in rule["groups"]]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "disallow_kactivity.yml").write_text(yaml.safe_dump({"rules": rules}))


@functools.cache
def rules_with(dirs: tuple[str, ...], tmp: Path) -> LoadedRules:
    """The shipped rules plus one user directory holding the files of every named fixture dir."""
    user = tmp / "+".join(dirs)
    user.mkdir(parents=True, exist_ok=True)
    for name in dirs:
        if name == "disallow_kactivity":
            disallow_kactivity(user)
        else:
            for file in (USER_RULES / name).glob("*.yml"):
                shutil.copy(file, user / f"{name}-{file.name}")
    return load_rules([shipped_rules_dir(), user])


def events_of(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Every line of the file, as the webhook would receive it: one EventList body per line."""
    out: list[dict[str, Any]] = []
    for line in (TRACES / entry["file"]).read_bytes().splitlines():
        if line.strip():
            body = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[' + line + b"]}"
            batch = parse_payload(body, max_events=10_000, max_event_bytes=1024 * 1024)
            assert batch.dropped == []
            out += batch.events
    assert len(out) == entry["events"]
    return out


def run(obj: dict[str, Any], rules: LoadedRules | None) -> tuple[int | None, int, list[Step]]:
    trace: list[Step] = []
    event = audit_event(obj, module="kubernetes", source="webhook", cluster="minikube", location="k8s-audit")
    result = analyzer(rules=rules).analyse(event, trace)
    alert_rule = result.match.rule.id if result.alert is not None and result.match.rule else None
    level = result.match.rule.level if result.match.rule else 0
    return alert_rule, level if result.alert is not None else 0, trace


@pytest.mark.parametrize("entry", _entries(True), ids=lambda e: e["file"])
def test_falco_positive_cases_fire_the_vigil_counterpart(entry: dict[str, Any], tmp_path_factory: Any) -> None:
    expected = [name for name in entry["expected_rules"] if name not in NO_COUNTERPART]
    user_dirs = tuple(sorted({NEEDS_USER_DIR[n] for n in expected if n in NEEDS_USER_DIR}))
    rules = rules_with(user_dirs, tmp_path_factory.getbasetemp()) if user_dirs else None
    allowed = set().union(*(FALCO_TO_VIGIL[name] for name in expected))
    for obj in events_of(entry):
        alert_rule, level, trace = run(obj, rules)
        matched = {step.rule_id for step in trace if step.outcome == "matched"}
        for name in expected:
            assert FALCO_TO_VIGIL[name] & matched, f"{entry['file']}: no Vigil rule for {name!r} matched ({matched})"
        assert alert_rule in allowed, f"{entry['file']}: alert from {alert_rule}, expected one of {allowed}"
        assert level >= 3


@pytest.mark.parametrize("entry", _entries(False), ids=lambda e: e["file"])
def test_falco_negative_cases_raise_no_alert(entry: dict[str, Any], tmp_path_factory: Any) -> None:
    user_dirs = tuple(sorted({EXTRA_FILES[f] for f in entry["extra_rule_files_in_test"] if f in EXTRA_FILES}))
    rules = rules_with(user_dirs, tmp_path_factory.getbasetemp()) if user_dirs else None
    for obj in events_of(entry):
        alert_rule, level, _ = run(obj, rules)
        assert alert_rule is None, f"{entry['file']} with {user_dirs}: alert from {alert_rule} (level {level})"


def test_negative_cases_do_alert_without_the_user_rules() -> None:
    """The user dirs are what silences them: without, the shipped activity rules report these events."""
    entries = {e["file"]: e for e in manifest()}
    cases = [("minikube_creates_namespace_foo.json", 200566), ("create_nginx_service_nonodeport.json", 200560),
             ("create_nginx_pod_nohostnetwork.json", 200510)]
    for name, rule in cases:
        assert run(events_of(entries[name])[0], None)[0] == rule


def test_kube_system_secret_by_admin_gives_nothing_as_in_falco() -> None:
    """Falco's suite asserts zero detections here; the rule's kube-system exception is what holds."""
    entry = {e["file"]: e for e in manifest()}["create_kube_system_secret.json"]
    alert_rule, _, trace = run(events_of(entry)[0], None)
    assert alert_rule is None
    assert any(s.rule_id == 200545 and "kube-system" in s.outcome for s in trace)


def test_fal_01_003_is_refused_with_a_clear_message() -> None:
    entry = {e["file"]: e for e in manifest()}["fal_01_003.json"]
    with pytest.raises(AuditPayloadError) as info:
        parse_payload((TRACES / entry["file"]).read_bytes(), max_events=10_000, max_event_bytes=1024 * 1024)
    assert str(info.value) == "not a Kubernetes audit event: kind must be 'Event' or 'EventList', got 0"


def test_every_falco_rule_in_the_manifest_has_a_counterpart_or_a_reason() -> None:
    named = {name for e in manifest() for name in e["expected_rules"]}
    assert named - set(FALCO_TO_VIGIL) - NO_COUNTERPART == set()
