"""EKS audit logs read from a real moto_server (CloudWatch Logs API) on loopback.

moto is a mock of AWS run as a real HTTP server: the boto3 calls, pagination tokens and error codes
go over the wire as they would to CloudWatch Logs. What it does not model (token expiry, real
throttling) is injected here: a saved token is corrupted, and throttling answers come from a botocore
`before-send` handler on the client the module is given.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config

from vigil.agent.modules.cloud.eks import EksModule
from vigil.agent.modules.cloud.eks_cursor import stream_key
from vigil.config_kubernetes import EksConfig
from vigil.event import AgentRef, Event

from ..unit.support import shipped_rules
from .cloud_emulators import MotoServer, Recorder, running, wait_for

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "k8s-audit" / "falco-traces"
AGENT = AgentRef(id="000", name="manager")
ADMIN_ARN = "arn:aws:iam::123456789012:role/eks-admin"
STREAMS = ("kube-apiserver-audit-aaaa", "kube-apiserver-audit-bbbb")
_clusters = itertools.count()
_next_ms: dict[tuple[str, str], int] = {}



@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def logs_client(moto: MotoServer, attempts: int = 3, mode: str = "adaptive") -> Any:
    return boto3.client("logs", endpoint_url=moto.endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing",
                        config=Config(retries={"mode": mode, "max_attempts": attempts}))  # type: ignore[typeddict-item]


def new_cluster(moto: MotoServer, streams: tuple[str, ...] = STREAMS) -> tuple[str, str]:
    cluster = f"prod-{next(_clusters)}"
    group = f"/aws/eks/{cluster}/cluster"
    client = logs_client(moto)
    client.create_log_group(logGroupName=group)
    for stream in streams:
        client.create_log_stream(logGroupName=group, logStreamName=stream)
    return cluster, group


def put(moto: MotoServer, group: str, stream: str, messages: list[str], start_ms: int | None = None) -> None:
    """One put_log_events per 5,000 messages, a millisecond apart from `start_ms` (default: now, or just
    after the last one put, as a kube-apiserver logs in time order)."""
    client = logs_client(moto)
    start = start_ms if start_ms is not None else max(int(time.time() * 1000), _next_ms.get((group, stream), 0))
    _next_ms[(group, stream)] = start + len(messages)
    for offset in range(0, len(messages), 5000):
        chunk = messages[offset:offset + 5000]
        client.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
            {"timestamp": start + offset + i, "message": m} for i, m in enumerate(chunk)])


def fixture_messages() -> list[str]:
    """Every Falco trace event as EKS writes it (one JSON line), the exec one with an IAM identity."""
    lines = []
    for path in sorted(TRACES.glob("*.json")):
        if path.name in ("manifest.json", "fal_01_003.json"):
            continue
        for line in path.read_text().splitlines():
            if line.strip():
                obj = json.loads(line)
                if path.name == "exec_pod.json":
                    obj["user"]["extra"] = {"arn": [ADMIN_ARN], "sessionName": ["alice"]}
                lines.append(json.dumps(obj))
    return lines


def synthetic(count: int, tag: str) -> list[str]:
    return [json.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
                        "auditID": f"{tag}-{i:06d}", "stage": "ResponseComplete", "verb": "get",
                        "requestURI": "/api/v1/namespaces/default/pods", "user": {"username": "system:node:n1"},
                        "objectRef": {"resource": "pods", "namespace": "default", "apiVersion": "v1"},
                        "responseStatus": {"code": 200}, "stageTimestamp": "2026-11-27T10:00:00.000000Z"})
            for i in range(count)]


def module(cluster: str, moto: MotoServer, sink: Recorder, *, client: Any = None,
           start_at: Literal["end", "beginning"] = "beginning", poll: float = 0.2) -> EksModule:
    cfg = EksConfig(cluster=cluster, region="us-east-1", endpoint_url=moto.endpoint, start_at=start_at,
                    poll_seconds=poll)
    the_client = client if client is not None else logs_client(moto)
    return EksModule(cfg, AGENT, sink, sink.read, client_factory=lambda: the_client, backoff=(0.05, 0.2))


def audit_ids(events: list[Event]) -> list[str]:
    return [e.data["k8s"]["auditID"] + "/" + e.data["k8s"].get("stage", "") for e in events]


def test_two_streams_with_a_truncated_and_a_cut_line_give_events_health_events_and_alerts(moto: MotoServer) -> None:
    cluster, group = new_cluster(moto)
    messages = fixture_messages()
    half = len(messages) // 2
    truncated = messages[0][:300] + "[Truncated...]"
    cut = messages[1][:120]
    put(moto, group, STREAMS[0], [*messages[:half], truncated])
    put(moto, group, STREAMS[1], [cut, *messages[half:]])
    sink = Recorder()
    mod = module(cluster, moto, sink)
    with running(mod) as errors:
        wait_for(lambda: len(sink.events) == len(messages) + 2, "every line as an event")
        time.sleep(0.5)  # a few more polls: nothing is read twice
    assert not errors
    assert len(sink.events) == len(messages) + 2
    assert sorted(json.dumps(e.data["k8s"], sort_keys=True) for e in sink.audit()) == sorted(
        json.dumps(json.loads(m), sort_keys=True) for m in messages)
    assert {e.location for e in sink.audit()} == {f"{group}/{s}" for s in STREAMS}
    assert {e.module for e in sink.events} == {"eks"}

    exec_event = next(e for e in sink.audit() if e.data["k8s"]["objectRef"].get("subresource") == "exec")
    assert exec_event.data["aws"]["iam_arn"] == ADMIN_ARN
    assert exec_event.data["aws"]["log_group"] == group and exec_event.data["aws"]["log_stream"] in STREAMS
    assert exec_event.data["audit"]["source"] == "eks" and exec_event.data["audit"]["cluster"] == cluster

    by_kind = {e.data["vigil"]["kind"]: e.data["vigil"] for e in sink.health()}
    assert by_kind["events_dropped"]["stream"] == STREAMS[0]
    assert by_kind["events_dropped"]["auditID"] == json.loads(messages[0])["auditID"]
    assert "[Truncated...]" in by_kind["events_dropped"]["error"]
    assert by_kind["malformed_input"]["stream"] == STREAMS[1]
    assert "not valid JSON" in by_kind["malformed_input"]["error"]
    assert mod.status()["truncated"] == 1 and mod.status()["malformed"] == 1

    alerts = sink.first_alerts()
    assert {"200001", "200003"} <= set(alerts)
    shipped = {str(rule_id) for rule_id in shipped_rules().rules}
    if "200522" in shipped:  # exec of a shell with a tty: the refinement of 200520 (exec), known from the URI
        assert alerts["200522"]["data"]["aws"]["iam_arn"] == ADMIN_ARN
        assert alerts["200522"]["data"]["exec"]["program"] == "bash"
    for rule_id in ("200511", "200531"):  # privileged pod, cluster-admin binding
        if rule_id in shipped:
            assert rule_id in alerts, f"rule {rule_id} did not fire from the EKS shape: {sorted(alerts)}"


def test_many_events_are_paged_and_a_restart_after_a_failed_store_neither_misses_nor_repeats(moto: MotoServer) -> None:
    cluster, group = new_cluster(moto, streams=(STREAMS[0],))
    first = synthetic(2500, "first")
    put(moto, group, STREAMS[0], first)
    failing = Recorder(fail_after=1)  # stores one page, then the store fails: the module stops
    mod = module(cluster, moto, failing)
    with running(mod) as errors:
        wait_for(lambda: bool(errors), "the failed store to stop the module")
    assert isinstance(errors[0], OSError)
    assert len(failing.audit()) == 1000  # one page of 1,000 was stored with its cursor

    sink = Recorder()
    sink.state = dict(failing.state)
    sink.batches = [list(b) for b in failing.batches]
    mod = module(cluster, moto, sink)
    with running(mod) as errors:
        wait_for(lambda: len(sink.audit()) == 2500, "the rest of the first 2,500")
        put(moto, group, STREAMS[0], synthetic(300, "second"))
        wait_for(lambda: len(sink.audit()) == 2800, "300 more while running")
        time.sleep(0.5)
    assert not errors
    ids = audit_ids(sink.audit())
    assert len(ids) == len(set(ids)) == 2800
    assert mod.status()["pages"] >= 2

    sink2 = Recorder()
    sink2.state = dict(sink.state)
    with running(module(cluster, moto, sink2)) as errors:
        time.sleep(1.0)
        put(moto, group, STREAMS[0], synthetic(5, "third"))
        wait_for(lambda: len(sink2.audit()) == 5, "5 events after the second restart")
        time.sleep(0.5)
    assert audit_ids(sink2.audit()) == [f"third-{i:06d}/ResponseComplete" for i in range(5)]


def test_a_refused_token_resumes_from_the_time_cursor_without_repeats(moto: MotoServer) -> None:
    cluster, group = new_cluster(moto, streams=(STREAMS[0],))
    now = int(time.time() * 1000)
    put(moto, group, STREAMS[0], synthetic(10, "a"), start_ms=now)
    sink = Recorder()
    with running(module(cluster, moto, sink)):
        wait_for(lambda: len(sink.audit()) == 10, "the first 10")
    key = stream_key(cluster, STREAMS[0])
    sink.state[key] = {**sink.state[key], "token": "f/not-a-token"}
    # Two more at the last event's millisecond (only one of those was read) and later ones.
    put(moto, group, STREAMS[0], synthetic(3, "b"), start_ms=now + 9)
    mod = module(cluster, moto, sink)
    with running(mod) as errors:
        wait_for(lambda: len(sink.audit()) == 13, "the 3 new ones")
        time.sleep(0.5)
    assert not errors
    assert mod.status()["stale_tokens"] == 1
    ids = audit_ids(sink.audit())
    assert len(ids) == len(set(ids)) == 13


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def test_throttling_is_retried_with_backoff_and_counted(moto: MotoServer) -> None:
    cluster, group = new_cluster(moto, streams=(STREAMS[0],))
    put(moto, group, STREAMS[0], synthetic(20, "t"))
    client = logs_client(moto, attempts=1, mode="standard")  # botocore tries twice, then gives up
    throttled = {"left": 5}

    def throttle(request: Any, **_: Any) -> AWSResponse | None:
        if throttled["left"] <= 0:
            return None
        throttled["left"] -= 1
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
        return AWSResponse(request.url, 400, {"x-amzn-RequestId": "t", "Content-Type": "application/x-amz-json-1.1"},
                           _Raw(body))

    client.meta.events.register("before-send.logs.GetLogEvents", throttle)
    sink = Recorder()
    mod = module(cluster, moto, sink, client=client)
    with running(mod) as errors:
        wait_for(lambda: len(sink.audit()) == 20, "the events once throttling stops")
    assert not errors
    status = mod.status()
    assert status["throttled"] == 5  # every throttled answer, botocore's retries included
    assert status["throttled_gave_up"] == 2  # botocore gave up twice: Vigil backed off and went on
    assert len(set(audit_ids(sink.audit()))) == 20


def test_a_missing_log_group_warns_once_and_is_read_once_it_exists(moto: MotoServer,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    cluster = f"later-{next(_clusters)}"
    sink = Recorder()
    mod = module(cluster, moto, sink, poll=0.1)
    with running(mod) as errors:
        wait_for(lambda: mod.status()["group_missing"], "the missing group to be noticed")
        time.sleep(0.5)
        group = f"/aws/eks/{cluster}/cluster"
        client = logs_client(moto)
        client.create_log_group(logGroupName=group)
        client.create_log_stream(logGroupName=group, logStreamName=STREAMS[0])
        put(moto, group, STREAMS[0], synthetic(3, "late"))
        wait_for(lambda: len(sink.audit()) == 3, "events once the group exists")
    assert not errors
    assert not mod.status()["group_missing"]
    assert len([r for r in caplog.records if "not found" in r.getMessage()]) == 1


def test_start_at_end_skips_what_was_logged_before_the_first_run(moto: MotoServer) -> None:
    cluster, group = new_cluster(moto)
    put(moto, group, STREAMS[0], synthetic(5, "old"), start_ms=int(time.time() * 1000) - 60_000)
    sink = Recorder()
    mod = module(cluster, moto, sink, start_at="end", poll=0.1)
    with running(mod):
        wait_for(lambda: mod.status()["pages"] >= 1, "a first read")
        put(moto, group, STREAMS[0], synthetic(2, "new"))
        put(moto, group, STREAMS[1], synthetic(2, "new-stream"))
        wait_for(lambda: len(sink.audit()) == 4, "the new events")
        time.sleep(0.5)
    expected = [f"{tag}-{i:06d}/ResponseComplete" for tag in ("new", "new-stream") for i in range(2)]
    assert sorted(audit_ids(sink.audit())) == sorted(expected)
