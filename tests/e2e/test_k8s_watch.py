"""The Kubernetes API watch module with the official client, against fake_kube_api: a server on 127.0.0.1
that plays back RECORDED list and watch responses (no kube-apiserver runs here). What a user sees is
checked: the alerts the events give, the resourceVersion each request asks for, the saved state."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vigil.agent.modules.kubernetes.watch import WatchModule, state_key
from vigil.config_kubernetes import WatchConfig
from vigil.event import AgentRef, Event

from ..unit.support import analyzer
from .fake_kube_api import FakeKubeApi, Script, load

pytest.importorskip("kubernetes")

AGENT = AgentRef("000", "manager")
PLAIN, KUBE_SYSTEM, ETC_MOUNT = (i["metadata"]["name"] for i in load("pods-list.json")["items"])
PRIVILEGED = load("pods-watch.json")[0]["object"]["metadata"]["name"]
HOST_NETWORK = load("pods-list-after-gap.json")["items"][3]["metadata"]["name"]


class Store:
    """The sink and state store, as the manager's: events and state committed together."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.events: list[Event] = []
        self.state: dict[str, Any] = dict(state or {})
        self.lock = threading.Lock()
        self.fail_next = 0  # commits that fail (a full disk) before they work again

    def __call__(self, events: list[Event], state: dict[str, Any] | None) -> None:
        with self.lock:
            if self.fail_next and events:
                self.fail_next -= 1
                raise OSError("No space left on device")
            self.events += events
            self.state.update(state or {})

    def read_state(self, key: str) -> Any:
        with self.lock:
            return self.state.get(key)

    def watch_events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e.data["watch"] for e in self.events if e.decoder == "json"]

    def alerts(self) -> list[tuple[int, str]]:
        """(rule id, description) of every alert the events give, in order."""
        an = analyzer()
        with self.lock:
            events = list(self.events)
        out = []
        for event in events:
            alert = an.analyse(event).alert
            if alert is not None:
                out.append((int(alert["rule"]["id"]), alert["rule"]["description"]))
        return out

    def rules(self) -> list[int]:
        return [rule for rule, _ in self.alerts()]


def wait_until(condition: Callable[[], Any], what: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what()}")
        time.sleep(0.02)


class Running:
    """The module in its own thread, as the Supervisor runs it; stopping must be prompt."""

    def __init__(self, module: WatchModule) -> None:
        self.module = module
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-k8s-watch")
        self.thread.start()

    def _run(self) -> None:
        try:
            self.module.run(self.stop_event)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self) -> float:
        started = time.monotonic()
        self.stop_event.set()
        self.module.interrupt()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the watch module did not stop"
        assert self.error is None, self.error
        return time.monotonic() - started


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    server = FakeKubeApi().start()
    yield server
    server.stop()


@pytest.fixture
def kubeconfig(tmp_path: Path, api: FakeKubeApi) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: recorded, cluster: {{server: "{api.url}"}}}}]
users: [{{name: vigil, user: {{token: test-token}}}}]
contexts: [{{name: recorded, context: {{cluster: recorded, user: vigil}}}}]
current-context: recorded
""")
    return path


def module(kubeconfig: Path, store: Store, resources: list[str], **options: Any) -> WatchModule:
    config = WatchConfig(enabled=True, kubeconfig=kubeconfig, resources=resources, timeout_seconds=30,
                         reconnect_min_seconds=0.05, reconnect_max_seconds=0.2, **options)
    return WatchModule(config, "recorded", AGENT, store, store.read_state)


def started(api: FakeKubeApi, store: Store, kubeconfig: Path, resources: list[str], **options: Any) -> Running:
    """Running, with the first watch request of every resource received (the baseline is stored)."""
    running = Running(module(kubeconfig, store, resources, **options))
    wait_until(lambda: all(api.watches(r) for r in resources), lambda: api.requests)
    return running


def test_list_then_watch_gives_events_and_alerts(api: FakeKubeApi, kubeconfig: Path) -> None:
    api.set_list("pods", "pods-list.json")
    api.set_list("clusterrolebindings", "clusterrolebindings-list.json")
    api.set_list("secrets", "secrets-list.json")
    store = Store()
    running = started(api, store, kubeconfig, ["pods", "clusterrolebindings", "secrets"])
    # First start: the three existing pods are a baseline; only the one mounting /etc alerts, once.
    assert [(w["type"], w["name"]) for w in store.watch_events()] == [
        ("EXISTING", PLAIN), ("EXISTING", KUBE_SYSTEM), ("EXISTING", ETC_MOUNT)]
    assert store.rules() == [200603]
    first = api.watches("pods")[0]
    assert first.query["watch"] in ("True", "true") and first.query["allowWatchBookmarks"] in ("True", "true")
    assert first.resource_version == "240000" and first.query["timeoutSeconds"] == "30"

    api.script("clusterrolebindings", "clusterrolebindings-watch.json")
    api.script("secrets", "secrets-watch.json")
    api.script("pods", Script(load("pods-watch.json")[:2]))  # ADDED privileged pod, then a BOOKMARK
    wait_until(lambda: len(api.watches("pods")) >= 2, lambda: api.requests)
    assert api.watches("pods")[1].resource_version == "240020"  # the bookmark moved on, with no event
    api.script("pods", Script(load("pods-watch.json")[2:]))  # a status update only
    wait_until(lambda: len(api.watches("pods")) >= 3, lambda: api.requests)
    assert api.watches("pods")[2].resource_version == "240030"
    wait_until(lambda: len(store.alerts()) >= 5, store.alerts)
    alerts = store.alerts()
    running.stop()

    assert sorted(alerts) == sorted([
        (200603, f"Kubernetes watch: Pod default/{ETC_MOUNT} (EXISTING) mounts sensitive host paths /etc"),
        (200602, f"Kubernetes watch: privileged Pod default/{PRIVILEGED} (ADDED): containers nginx, images nginx"),
        (200611, "Kubernetes watch: ClusterRoleBinding some-reader-binding (ADDED) binds User:minikube to "
                 "cluster-admin"),
        (200613, "Kubernetes watch: secret default/db-credentials ADDED (type Opaque)"),
        (200613, "Kubernetes watch: secret default/db-credentials DELETED (type Opaque)"),
    ])
    assert store.state[state_key("pods")]["rv"] == "240030"
    assert store.state[state_key("secrets")]["rv"] == "240013"
    secret_events = [e for e in store.events if e.decoder == "json" and e.data["watch"]["resource"] == "secrets"]
    assert all("data" not in e.data["object"] and "czNjcjN0" not in str(e.to_dict()) for e in secret_events)
    assert len([w for w in store.watch_events() if w["type"] == "MODIFIED"]) == 0  # status updates are skipped


@pytest.mark.parametrize("how", ["error event", "http 410"])
def test_expired_version_relists_and_reports_the_changes_made_in_the_gap(
        api: FakeKubeApi, kubeconfig: Path, how: str) -> None:
    api.set_list("pods", "pods-list.json")
    store = Store()
    running = started(api, store, kubeconfig, ["pods"])
    baseline = len(store.events)
    api.set_list("pods", "pods-list-after-gap.json")
    api.script("pods", "pods-watch-expired.json" if how == "error event"
               else Script([load("status-expired.json")], http_status=410))
    wait_until(lambda: api.watches("pods")[-1].resource_version == "240500", lambda: api.requests)
    running.stop()

    assert len(api.lists_served("pods")) == 2  # the new list's version, not an item's, is watched from
    changes = [(w["type"], w["name"], w["relisted"]) for w in store.watch_events()[baseline:]]
    assert sorted(changes) == sorted([
        ("MODIFIED", PLAIN, True),  # relabelled in the gap
        ("ADDED", PRIVILEGED, True),  # created in the gap
        ("ADDED", HOST_NETWORK, True),  # created in the gap
        ("DELETED", KUBE_SYSTEM, True),  # gone in the gap
    ])
    rules = store.rules()
    assert rules.count(200602) == 1 and rules.count(200604) == 1 and rules.count(200006) == 1
    gap = next(d for r, d in store.alerts() if r == 200006)
    assert "expired" in gap and "4 changes" in gap
    assert store.state[state_key("pods")]["rv"] == "240500"


def test_disconnect_resumes_from_the_last_version_seen(api: FakeKubeApi, kubeconfig: Path) -> None:
    api.set_list("pods", "pods-list.json")
    store = Store()
    running = started(api, store, kubeconfig, ["pods"])
    api.script("pods", Script(load("pods-watch.json")[:1], drop=True))  # one event, then the connection is cut
    wait_until(lambda: len(api.watches("pods")) >= 2, lambda: api.requests)
    wait_until(lambda: 200002 in store.rules(), store.alerts)  # "reconnected", once the server answers again
    running.stop()
    assert [r.resource_version for r in api.watches("pods")] == ["240000", "240010"]
    assert len(api.lists_served("pods")) == 1  # no list again: the watch resumed
    assert store.rules().count(200602) == 1


def test_restart_resumes_from_the_saved_version(api: FakeKubeApi, kubeconfig: Path) -> None:
    api.set_list("pods", "pods-list.json")
    store = Store()
    running = started(api, store, kubeconfig, ["pods"])
    api.script("pods", Script(load("pods-watch.json")[:1]))
    wait_until(lambda: len(api.watches("pods")) >= 2, lambda: api.requests)
    assert running.stop() < 3.0  # a watch held open does not delay stopping
    assert store.state[state_key("pods")] == {"rv": "240010", "created": "2018-10-26T15:00:00Z"}

    # A new process: same saved state, no memory. It watches from the saved version without listing.
    again = Store(store.state)
    watches_before, lists_before = len(api.watches("pods")), len(api.lists_served("pods"))
    running = Running(module(kubeconfig, again, ["pods"]))
    wait_until(lambda: len(api.watches("pods")) > watches_before, lambda: api.requests)
    assert api.watches("pods")[watches_before].resource_version == "240010"
    assert len(api.lists_served("pods")) == lists_before
    assert again.events == []

    # The saved version then expires: what was created since the last object seen is reported as added.
    api.set_list("pods", "pods-list-after-gap.json")
    api.script("pods", "pods-watch-expired.json")
    wait_until(lambda: 200006 in again.rules(), again.alerts)
    running.stop()
    added = [(w["type"], w["name"]) for w in again.watch_events()]
    # created at or after 2018-10-26T15:00:00Z: the privileged pod (seen before the restart, so a
    # possible repeat) and the host-network pod; the older ones cannot be compared and are left alone.
    assert sorted(added) == sorted([("ADDED", PRIVILEGED), ("ADDED", HOST_NETWORK)])
    gap = next(d for r, d in again.alerts() if r == 200006)
    assert "cannot be known" in gap


def test_malformed_watch_lines_are_reported_and_the_watch_goes_on(api: FakeKubeApi, kubeconfig: Path) -> None:
    api.set_list("pods", "pods-list.json")
    store = Store()
    running = started(api, store, kubeconfig, ["pods"], report_existing=False)
    assert store.events == []  # report_existing off: a silent baseline
    pod = load("pods-watch.json")[0]
    api.script("pods", Script(["this is not JSON", {"type": "EXPLODED", "object": pod["object"]},
                               {"type": "ADDED", "object": "a string"}, pod]))
    api.script("pods", Script([{"type": "ADDED"}]))  # no object at all: the client itself fails on it
    api.script("pods", Script([load("pods-watch.json")[1]]))  # a bookmark after it
    wait_until(lambda: len(api.watches("pods")) >= 4, lambda: api.requests)
    status = running.module.status()["resources"]["pods"]
    running.stop()
    # the garbage line, the unknown type, the string object, and the event without an object
    assert store.rules().count(200001) == 4 and store.rules().count(200602) == 1
    assert [r.resource_version for r in api.watches("pods")] == ["240000", "240010", "240010", "240020"]
    assert status["malformed"] == 4 and status["errors"] == 1
    assert any("KeyError" in d for r, d in store.alerts() if r == 200001)


def test_unreachable_server_is_retried_and_reported_when_back(api: FakeKubeApi, kubeconfig: Path) -> None:
    store = Store()
    running = Running(module(kubeconfig, store, ["pods"]))  # no list recorded yet: the server answers 404
    wait_until(lambda: len(api.lists_served("pods")) >= 2, lambda: api.requests)
    assert running.module.status()["resources"]["pods"]["last_error"]
    api.set_list("pods", "pods-list.json")
    wait_until(lambda: api.watches("pods"), lambda: api.requests)
    wait_until(lambda: 200002 in store.rules(), store.alerts)
    running.stop()


def test_an_event_that_could_not_be_stored_is_watched_again(api: FakeKubeApi, kubeconfig: Path) -> None:
    api.set_list("pods", "pods-list.json")
    store = Store()
    running = started(api, store, kubeconfig, ["pods"], report_existing=False)
    store.fail_next = 1
    api.script("pods", Script(load("pods-watch.json")[:1]), Script(load("pods-watch.json")[:1]))
    wait_until(lambda: 200602 in store.rules(), store.alerts)
    running.stop()
    # the failed commit left the saved version where it was, so the watch asked again from there
    assert [r.resource_version for r in api.watches("pods")][:2] == ["240000", "240000"]
    assert store.rules().count(200602) == 1
    assert store.state[state_key("pods")]["rv"] == "240010"
