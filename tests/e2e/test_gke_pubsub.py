"""GKE audit logs from a real Google Pub/Sub emulator on loopback.

The emulator is Google's own server (gcloud SDK, Java) speaking the Pub/Sub gRPC API; the module uses
the real google-cloud-pubsub client against it. LogEntries are built from the Falco traces with the
inverse of the GKE mapping (tests/unit/test_gke_convert.log_entry), plus the hand-written GKE shape.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.cloud import pubsub_v1

from vigil.agent.modules.cloud.gke import GkeModule, state_key
from vigil.config_kubernetes import GkeConfig
from vigil.event import AgentRef, Event

from ..unit.support import shipped_rules
from ..unit.test_gke_convert import GKE_SHAPE, fixture_events, log_entry
from .cloud_emulators import PubsubEmulator, Recorder, running, wait_for

PROJECT = "vigil-test"
AGENT = AgentRef(id="000", name="manager")
FIXTURES = ("attach_pod.json", "create_nginx_pod_privileged.json", "attach_cluster_admin_role.json",
            "create_configmap.json", "delete_secret.json")
_names = itertools.count()



@pytest.fixture(scope="module")
def emulator() -> Iterator[PubsubEmulator]:
    before = os.environ.get("PUBSUB_EMULATOR_HOST")
    with PubsubEmulator() as server:
        os.environ["PUBSUB_EMULATOR_HOST"] = server.host
        try:
            yield server
        finally:
            if before is None:
                os.environ.pop("PUBSUB_EMULATOR_HOST", None)
            else:
                os.environ["PUBSUB_EMULATOR_HOST"] = before


def new_subscription(ack_deadline: int = 10) -> tuple[str, str]:
    """A topic (as a Log Router sink would publish to) and its subscription; returns their paths."""
    n = next(_names)
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(PROJECT, f"gke-audit-{n}")
    subscription = subscriber.subscription_path(PROJECT, f"vigil-{n}")
    publisher.create_topic(request={"name": topic})
    subscriber.create_subscription(request={"name": subscription, "topic": topic,
                                            "ack_deadline_seconds": ack_deadline})
    return topic, subscription


def publish(topic: str, payloads: list[bytes]) -> None:
    publisher = pubsub_v1.PublisherClient()
    for future in [publisher.publish(topic, data) for data in payloads]:
        future.result(timeout=10)


def entries() -> list[dict[str, Any]]:
    """The hand-written GKE exec shape (its insertId is exec_pod's auditID) and entries made from traces."""
    found = [json.loads(GKE_SHAPE.read_text())]
    for name in FIXTURES:
        found += [log_entry(audit, project=PROJECT, cluster="gke-prod") for audit in fixture_events(name)]
    return found


def module(subscription: str, sink: Recorder, client_factory: Callable[[], Any] | None = None) -> GkeModule:
    cfg = GkeConfig(project=PROJECT, subscription=subscription.rsplit("/", 1)[1], max_messages=50)
    return GkeModule(cfg, AGENT, sink, sink.read, client_factory=client_factory, pull_timeout=1.0,
                     backoff=(0.05, 0.2))


def insert_ids(events: list[Event]) -> list[str]:
    return [e.data["gcp"]["insertId"] for e in events]


def test_published_log_entries_become_audit_events_and_bad_messages_health_events(emulator: PubsubEmulator) -> None:
    topic, subscription = new_subscription()
    good = entries()
    bad = [b"not json at all", json.dumps({"kind": 0}).encode(),
           json.dumps({"protoPayload": {"serviceName": "storage.googleapis.com", "methodName": "x"}}).encode()]
    publish(topic, [json.dumps(e).encode() for e in good] + bad)
    sink = Recorder()
    mod = module(subscription, sink)
    with running(mod) as errors:
        wait_for(lambda: len(sink.events) == len(good) + len(bad), "every message as an event")
        wait_for(lambda: mod.status()["acked"] == len(good) + len(bad), "every message acknowledged")
    assert not errors
    assert sorted(insert_ids(sink.audit())) == sorted(e["insertId"] for e in good)
    errors_seen = sorted(e.data["vigil"]["error"] for e in sink.health())
    assert [e.data["vigil"]["kind"] for e in sink.health()] == ["malformed_input"] * 3
    assert any("not JSON" in e for e in errors_seen)
    assert any("no protoPayload" in e for e in errors_seen)
    assert any("'storage.googleapis.com'" in e for e in errors_seen)

    exec_event = next(e for e in sink.audit() if e.data["gcp"]["principalEmail"] == "dev@example.com")
    assert exec_event.module == "gke" and exec_event.data["audit"]["source"] == "gke"
    assert exec_event.data["audit"]["cluster"] == "my-cluster"  # from the entry's resource labels
    assert exec_event.location == "projects/my-project/logs/cloudaudit.googleapis.com%2Factivity"
    assert exec_event.data["k8s"]["objectRef"]["subresource"] == "exec"
    privileged = next(e for e in sink.audit() if e.data.get("pod", {}).get("privileged"))
    assert privileged.data["gcp"]["cluster"] == "gke-prod"

    fired = sink.first_alerts()
    assert "200001" in fired
    shipped = {str(rule_id) for rule_id in shipped_rules().rules}
    for rule_id in ("200520", "200521", "200511", "200531"):  # exec, attach, privileged pod, cluster-admin
        if rule_id in shipped:
            assert rule_id in fired, f"rule {rule_id} did not fire from the GKE shape: {sorted(fired)}"


class AckFailsOnce:
    """A subscriber whose first acknowledge fails: the crash window between the commit and the ack."""

    def __init__(self) -> None:
        self.client = pubsub_v1.SubscriberClient()
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def acknowledge(self, request: dict[str, Any]) -> None:
        if not self.failed:
            self.failed = True
            raise ConnectionError("lost the connection before the ack (test)")
        self.client.acknowledge(request=request)


def test_messages_are_acked_only_after_the_store_and_redeliveries_are_not_stored_twice(
        emulator: PubsubEmulator) -> None:
    topic, subscription = new_subscription(ack_deadline=10)
    good = entries()
    publish(topic, [json.dumps(e).encode() for e in good])

    # The store fails: nothing is acknowledged, the messages are handed back at once and come again.
    failing = Recorder()
    failing.fail = True
    mod = module(subscription, failing)
    with running(mod) as errors:
        wait_for(lambda: bool(errors), "the failed store to stop the module")
    assert isinstance(errors[0], OSError) and failing.events == [] and mod.status()["acked"] == 0

    # Stored, then the ack is lost: Pub/Sub delivers the batch again after its deadline (10 s) and the
    # insertIds saved with the batch tell the next run to drop it.
    sink = Recorder()
    sink.state = dict(failing.state)
    crashing = module(subscription, sink, client_factory=AckFailsOnce)
    with running(crashing) as errors:
        wait_for(lambda: bool(errors), "the lost ack to stop the module")
    assert isinstance(errors[0], ConnectionError)
    stored = len(sink.audit())
    assert stored > 0 and sink.state[state_key(subscription.rsplit("/", 1)[1])]["insert_ids"]

    mod = module(subscription, sink)
    with running(mod) as errors:
        wait_for(lambda: len(sink.audit()) == len(good), "every entry stored", timeout=40)
        wait_for(lambda: mod.status()["redelivered"] >= stored, "the lost-ack batch to come again", timeout=40)
        wait_for(lambda: mod.status()["acked"] >= len(good), "every message acknowledged", timeout=40)
        time.sleep(12)  # past the ack deadline: an unacknowledged message would be delivered again now
    assert not errors
    assert sorted(insert_ids(sink.audit())) == sorted(e["insertId"] for e in good)
    assert mod.status()["messages"] == mod.status()["acked"]
