"""Watches the Kubernetes API (list, then watch) for clusters whose audit logs Vigil cannot read.

One thread per watched resource. Each lists, then watches from the list's resourceVersion with one
request at a time (`timeout_seconds`), so Vigil owns reconnection and backoff rather than the client.
The resourceVersion is committed with every batch, so a restart resumes the watch where it stopped.
When the API server no longer has that version (410 Gone, as an ERROR event or an HTTP status) the
resource is listed again and compared with what was known, so changes made during the gap still
become ADDED/MODIFIED/DELETED events, and a `possible_gap` health event (rule 200006) says it happened.

First start: existing objects are not reported as "added". Pods, workloads and RBAC objects are
reported once as type EXISTING (config `report_existing`), so a privileged pod or a cluster-admin
binding that predates Vigil still alerts; everything else becomes a silent baseline.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from vigil.agent.modules.base import BatchSink, StateReader
from vigil.agent.modules.kubernetes.audit_normalize import problem_event
from vigil.agent.modules.kubernetes.watch_normalize import RESOURCES, Seen, identity, watch_event
from vigil.config_kubernetes import WatchConfig
from vigil.event import AgentRef, Event

log = logging.getLogger(__name__)

MODULE = "k8s_watch"
PAGE = 500  # objects per list request
BATCH = 500  # events per sink call while listing
CONNECT_SECONDS = 10.0
STATE_SECONDS = 5.0  # how often a version moved on by bookmarks and status updates alone is saved
# resource -> (API class in kubernetes.client, list function over all namespaces)
_LISTERS: dict[str, tuple[str, str]] = {
    "pods": ("CoreV1Api", "list_pod_for_all_namespaces"),
    "configmaps": ("CoreV1Api", "list_config_map_for_all_namespaces"),
    "secrets": ("CoreV1Api", "list_secret_for_all_namespaces"),
    "namespaces": ("CoreV1Api", "list_namespace"),
    "serviceaccounts": ("CoreV1Api", "list_service_account_for_all_namespaces"),
    "services": ("CoreV1Api", "list_service_for_all_namespaces"),
    "deployments": ("AppsV1Api", "list_deployment_for_all_namespaces"),
    "daemonsets": ("AppsV1Api", "list_daemon_set_for_all_namespaces"),
    "statefulsets": ("AppsV1Api", "list_stateful_set_for_all_namespaces"),
    "replicasets": ("AppsV1Api", "list_replica_set_for_all_namespaces"),
    "jobs": ("BatchV1Api", "list_job_for_all_namespaces"),
    "cronjobs": ("BatchV1Api", "list_cron_job_for_all_namespaces"),
    "roles": ("RbacAuthorizationV1Api", "list_role_for_all_namespaces"),
    "rolebindings": ("RbacAuthorizationV1Api", "list_role_binding_for_all_namespaces"),
    "clusterroles": ("RbacAuthorizationV1Api", "list_cluster_role"),
    "clusterrolebindings": ("RbacAuthorizationV1Api", "list_cluster_role_binding"),
    "mutatingwebhookconfigurations": ("AdmissionregistrationV1Api", "list_mutating_webhook_configuration"),
    "validatingwebhookconfigurations": ("AdmissionregistrationV1Api", "list_validating_webhook_configuration"),
}
assert set(_LISTERS) == set(RESOURCES)
# What the client raises on data it cannot read (JSON, missing keys, wrong types), not on network trouble.
_DATA_ERRORS = (KeyError, TypeError, ValueError, AttributeError)
_EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED"})
# Kinds whose existing objects are reported at the first start: the ones posture rules look at.
_POSTURE_RESOURCES = frozenset({"pods", "deployments", "daemonsets", "statefulsets", "replicasets", "jobs",
                                "cronjobs", "roles", "rolebindings", "clusterroles", "clusterrolebindings"})


def state_key(resource: str) -> str:
    return f"k8s.watch:{resource}"


class Expired(Exception):
    """The API server no longer keeps the resourceVersion we asked for (410): list again."""


@dataclass
class _Kind:
    """One watched resource: where its watch stands and what is known of its objects (in memory)."""

    resource: str
    rv: str | None = None  # where the next watch starts; None: list first
    newest_created: str = ""  # newest creationTimestamp seen, saved to tell new objects after a restart
    snapshot: dict[str, Seen] | None = None  # uid -> Seen; None until listed (or resumed) in this process
    resumed: bool = False  # the rv came from saved state: the snapshot holds only what was seen since
    down_since: float | None = None  # when the watch last failed; None while it works
    unsaved: bool = False  # kind.rv moved on since the state was last stored
    saved_at: float = 0.0
    gap: str | None = None  # why the next list replaces a watch
    watcher: Any = None  # the kubernetes Watch of the request in progress
    response: Any = None  # its urllib3 response, whose socket interrupt() shuts down
    counters: dict[str, int] = field(default_factory=lambda: {
        "events": 0, "lists": 0, "relists": 0, "bookmarks": 0, "skipped_status_updates": 0, "malformed": 0,
        "errors": 0, "watch_requests": 0})
    connected: bool = False
    last_error: str | None = None

    def state(self, rv: str | None = None, created: str | None = None) -> dict[str, Any]:
        """The saved state once rv/created (default: the current ones) are stored."""
        return {state_key(self.resource): {"rv": rv or self.rv,
                                           "created": self.newest_created if created is None else created}}


class WatchModule:
    """The `k8s_watch` module: every configured resource listed, then watched, changes sent to the sink."""

    name = MODULE

    def __init__(self, config: WatchConfig, cluster: str, agent: AgentRef, sink: BatchSink,
                 read_state: StateReader) -> None:
        self.config = config
        self.cluster = cluster
        self.agent = agent
        self.sink = sink
        self.location = f"k8s_watch:{cluster}"
        self.kinds: dict[str, _Kind] = {}
        for resource in config.resources:
            kind = _Kind(resource)
            saved = read_state(state_key(resource))
            if isinstance(saved, dict) and isinstance(saved.get("rv"), str) and saved["rv"]:
                kind.rv, kind.resumed = saved["rv"], True
                created = saved.get("created")
                kind.newest_created = created if isinstance(created, str) else ""
            self.kinds[resource] = kind
        self.server: str | None = None
        self._sink_lock = threading.Lock()

    # --- Module contract ---

    def status(self) -> dict[str, Any]:
        return {"server": self.server, "cluster": self.cluster,
                "resources": {r: {"resource_version": k.rv, "connected": k.connected, "objects":
                                  len(k.snapshot or {}), "last_error": k.last_error, **k.counters}
                              for r, k in self.kinds.items()}}

    def interrupt(self) -> None:
        for kind in self.kinds.values():
            _unblock(kind)

    def run(self, stop: threading.Event) -> None:
        api = self._api_client()
        threads = [threading.Thread(target=self._follow, args=(api, kind, stop), name=f"k8s-watch-{r}", daemon=True)
                   for r, kind in self.kinds.items()]
        for thread in threads:
            thread.start()
        stop.wait()
        self.interrupt()
        for thread in threads:
            thread.join(timeout=CONNECT_SECONDS)
        api.close()

    # --- connecting ---

    def _api_client(self) -> Any:
        """A client from the kubeconfig, or the pod's service account when running in a cluster."""
        from kubernetes import client
        from kubernetes import config as kube_config

        configuration = client.Configuration()
        if self.config.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            kube_config.load_incluster_config(client_configuration=configuration)
        else:
            path = str(self.config.kubeconfig) if self.config.kubeconfig else None
            kube_config.load_kube_config(config_file=path, context=self.config.context,
                                         client_configuration=configuration)
        configuration.client_side_validation = False
        self.server = configuration.host
        return client.ApiClient(configuration)

    def _lister(self, api: Any, resource: str) -> Any:
        from kubernetes import client

        class_name, method = _LISTERS[resource]
        return getattr(getattr(client, class_name)(api), method)

    # --- one resource (its own thread) ---

    def _follow(self, api: Any, kind: _Kind, stop: threading.Event) -> None:
        delay = self.config.reconnect_min_seconds
        while not stop.is_set():
            started = time.monotonic()
            try:
                if kind.rv is None:
                    self._list(api, kind, stop)
                delivered = self._watch(api, kind, stop)
                self._save(kind)
                self._answered(kind)
                kind.last_error = None
                if delivered or time.monotonic() - started > 1.0:
                    delay = self.config.reconnect_min_seconds
                    continue
                problem = "the watch ended at once without an event"  # do not hammer a server that does that
            except Expired as exc:
                kind.rv, kind.gap = None, str(exc)
                continue
            except Exception as exc:  # the server, the network or its data: log, count, back off, go on
                if stop.is_set():
                    break
                problem = _first_line(exc)
                kind.counters["errors"] += 1
                kind.last_error = problem
                if isinstance(exc, _DATA_ERRORS):  # the client could not read what the server sent
                    self._malformed(kind, None, f"the {kind.resource} watch or list could not be read ({problem})")
                if kind.down_since is None:
                    kind.down_since = time.monotonic()
                    log.warning("Kubernetes watch of %s on %s failed (%s); retrying with backoff",
                                kind.resource, self.server, problem)
            finally:
                kind.connected = False
            log.debug("Kubernetes watch of %s: %s; next try in %.1f s", kind.resource, problem, delay)
            stop.wait(delay)
            delay = min(delay * 2, self.config.reconnect_max_seconds)
        try:
            self._save(kind)  # stopping: keep where the watch got to
        except Exception as exc:
            log.warning("Kubernetes watch of %s: saving its position failed: %s", kind.resource, exc)

    def _list(self, api: Any, kind: _Kind, stop: threading.Event) -> None:
        """List every object; on the first start a baseline, after a gap the differences as events."""
        items, rv = self._list_all(api, kind.resource)
        self._answered(kind)
        kind.counters["lists"] += 1
        gap = kind.gap
        previous = kind.snapshot if not kind.resumed else None  # a complete picture to compare with, or none
        snapshot: dict[str, Seen] = {}
        events: list[Event] = []
        newest = newest_before = kind.newest_created
        report_existing = self.config.report_existing and kind.resource in _POSTURE_RESOURCES
        for obj in items:
            uid, _version = identity(obj)
            created = _created(obj)
            before = previous.get(uid) if previous is not None else None
            if previous is not None:
                kind_of_change = "ADDED" if before is None else "MODIFIED"
            elif kind.resumed:  # after a restart: only what was created since is known to be new
                seen_since = kind.snapshot is not None and uid in kind.snapshot
                kind_of_change = "ADDED" if created >= kind.newest_created and not seen_since else ""
            else:
                kind_of_change = "EXISTING" if report_existing else ""
            event, seen = watch_event(kind.resource, kind_of_change or "EXISTING", obj, cluster=self.cluster,
                                      previous=before, relisted=gap is not None, agent=self.agent, when=time.time())
            snapshot[uid] = seen
            newest = max(newest, created)
            if kind_of_change == "MODIFIED" and before is not None and before.content == seen.content:
                continue
            if kind_of_change:
                events.append(event)
        for uid, seen in (previous or {}).items():
            if uid not in snapshot:
                events.append(_deleted(kind.resource, uid, seen, self.cluster, self.agent))
        if gap is not None:
            events.append(self._gap_event(kind, gap, rv, previous is not None, len(events), newest_before))
        for start in range(0, max(len(events), 1), BATCH):
            if stop.is_set():
                return
            chunk = events[start:start + BATCH]
            self._store(chunk, kind.state(rv, newest) if start + BATCH >= len(events) else None)
        # only now that all is stored: a failure above lists again and repeats rather than loses
        kind.rv, kind.snapshot, kind.newest_created, kind.resumed, kind.gap = rv, snapshot, newest, False, None
        kind.unsaved, kind.saved_at = False, time.monotonic()
        kind.counters["events"] += len(events)
        kind.counters["relists"] += gap is not None

    def _list_all(self, api: Any, resource: str) -> tuple[list[dict[str, Any]], str]:
        """Every object (page by page) and the list's resourceVersion, where the watch starts."""
        lister = self._lister(api, resource)
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": PAGE, "_preload_content": False,
                                      "_request_timeout": (CONNECT_SECONDS, self.config.timeout_seconds)}
            if token:
                kwargs["_continue"] = token
            response = lister(**kwargs)
            body = json.loads(response.data)
            metadata = body.get("metadata") if isinstance(body, dict) else None
            page = body.get("items") if isinstance(body, dict) else None
            if not isinstance(metadata, dict) or not isinstance(page, list):
                raise ValueError(f"the {resource} list is not a Kubernetes list")
            items += [i for i in page if isinstance(i, dict)]
            token = metadata.get("continue") if isinstance(metadata.get("continue"), str) else None
            if not token:
                rv = metadata.get("resourceVersion")
                if not isinstance(rv, str) or not rv:
                    raise ValueError(f"the {resource} list has no resourceVersion")
                return items, rv

    def _watch(self, api: Any, kind: _Kind, stop: threading.Event) -> bool:
        """One watch request from kind.rv until the server ends it; True when it delivered anything."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        watcher = watch.Watch(return_type="object")  # "object": raw dicts, no model building
        kind.watcher = watcher
        if stop.is_set():
            return False
        kind.counters["watch_requests"] += 1
        delivered = False
        lister = self._lister(api, kind.resource)

        def request(*args: Any, **kwargs: Any) -> Any:
            response = lister(*args, **kwargs)  # returns once the server has answered with a stream
            kind.response = response
            if stop.is_set():
                _unblock(kind)
            kind.connected = True
            self._answered(kind)
            return response

        try:
            stream = watcher.stream(request, resource_version=kind.rv, allow_watch_bookmarks=True,
                                    timeout_seconds=self.config.timeout_seconds,
                                    _request_timeout=(CONNECT_SECONDS, self.config.timeout_seconds + 60))
            for event in stream:
                if stop.is_set():
                    break
                delivered = True
                self._handle(kind, event)
        except ApiException as exc:
            if exc.status == 410:
                raise Expired(f"resourceVersion {kind.rv} of {kind.resource} expired ({_first_line(exc)})") from exc
            raise
        finally:
            kind.watcher = kind.response = None
        return delivered

    def _handle(self, kind: _Kind, event: Any) -> None:
        """One watch event: a Vigil event for a real change; the resourceVersion moves on either way."""
        event_type = event.get("type") if isinstance(event, dict) else None
        obj = event.get("raw_object") if isinstance(event, dict) else None
        if event_type == "BOOKMARK":
            rv = identity(obj if isinstance(obj, dict) else {})[1]
            if rv:
                kind.counters["bookmarks"] += 1
                self._moved(kind, rv, kind.newest_created)
            return
        uid, rv = identity(obj) if isinstance(obj, dict) else ("", "")
        if event_type not in _EVENT_TYPES or not isinstance(obj, dict) or not rv:
            self._malformed(kind, event)
            return
        snapshot = kind.snapshot if kind.snapshot is not None else {}
        kind.snapshot = snapshot
        before = snapshot.get(uid)
        out, seen = watch_event(kind.resource, event_type, obj, cluster=self.cluster, previous=before,
                                agent=self.agent, when=time.time())
        created = max(kind.newest_created, _created(obj))
        status_only = event_type == "MODIFIED" and before is not None and before.content == seen.content
        if status_only:  # nothing a rule looks at changed: only the resourceVersion moves on
            self._moved(kind, rv, created)
        else:
            self._store([out], kind.state(rv, created))
            kind.rv, kind.newest_created = rv, created  # stored: a failure above resumes before this event
            kind.unsaved, kind.saved_at = False, time.monotonic()
        if event_type == "DELETED":
            snapshot.pop(uid, None)
        else:
            snapshot[uid] = seen
        kind.counters["skipped_status_updates" if status_only else "events"] += 1

    # --- events about the watch itself ---

    def _moved(self, kind: _Kind, rv: str, created: str) -> None:
        """The version moved on without an event (bookmark, status update): saved every few seconds, not
        each time (a restart then replays a little and skips it again)."""
        kind.rv, kind.newest_created, kind.unsaved = rv, created, True
        if time.monotonic() - kind.saved_at >= STATE_SECONDS:
            self._save(kind)

    def _save(self, kind: _Kind) -> None:
        if kind.unsaved and kind.rv is not None:
            self._store([], kind.state())
            kind.unsaved, kind.saved_at = False, time.monotonic()

    def _store(self, events: list[Event], state: dict[str, Any] | None) -> None:
        with self._sink_lock:  # one thread per resource; the sink is not assumed thread-safe
            self.sink(events, state)

    def _malformed(self, kind: _Kind, event: Any, message: str = "") -> None:
        kind.counters["malformed"] += 1
        excerpt = json.dumps(event, default=str)[:512] if event is not None else "(a line that is not JSON)"
        message = message or f"a watch event for {kind.resource} that is not a Kubernetes watch event was skipped"
        log.warning("Kubernetes watch: %s: %s", message, excerpt)
        self._store([problem_event(MODULE, self.location, "malformed_input", message, agent=self.agent,
                                   details={"resource": kind.resource, "excerpt": excerpt})], None)

    def _gap_event(self, kind: _Kind, reason: str, rv: str, compared: bool, changes: int, since: str) -> Event:
        if compared:
            what = f"{changes} changes found by comparing with the objects known before were reported"
        else:
            what = (f"Vigil restarted since; objects created since {since or 'then'} were "
                    "reported as added, but changes to and deletions of older objects cannot be known")
        message = f"{reason}; {kind.resource} listed again: {what}"
        log.warning("Kubernetes watch: %s", message)
        return problem_event(MODULE, self.location, "possible_gap", message, agent=self.agent,
                             details={"resource": kind.resource, "cluster": self.cluster,
                                      "resource_version": rv, "changes": changes})

    def _answered(self, kind: _Kind) -> None:
        """The API server answered: after a failure, say the watch is back (rule 200002)."""
        if kind.down_since is None:
            return
        outage, kind.down_since = time.monotonic() - kind.down_since, None
        log.info("Kubernetes watch of %s: reconnected to %s after %.1f s", kind.resource, self.server, outage)
        self._store([problem_event(MODULE, self.location, "reconnected", "reconnected", agent=self.agent,
                                   details={"target": f"{self.server} ({kind.resource})",
                                            "outage_seconds": round(outage, 1)})], None)


def _deleted(resource: str, uid: str, seen: Seen, cluster: str, agent: AgentRef) -> Event:
    """A DELETED event for an object that vanished during a gap; only its identity is still known."""
    obj = {"metadata": {"uid": uid, "resourceVersion": seen.resource_version, "name": seen.name,
                        "namespace": seen.namespace}}
    event, _ = watch_event(resource, "DELETED", obj, cluster=cluster, previous=seen, relisted=True, agent=agent,
                           when=time.time())
    return event


def _unblock(kind: _Kind) -> None:
    """Make a read blocked on the watch's socket return now (urllib3 shutdown, else the client's own stop)."""
    watcher, response = kind.watcher, kind.response
    if watcher is not None:
        watcher.stop()
    if response is not None:
        try:
            response.shutdown()
        except Exception:  # already closed or released: nothing is blocked on it
            log.debug("shutting the watch connection down failed", exc_info=True)


def _created(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata")
    value = metadata.get("creationTimestamp") if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, _DATA_ERRORS):
        text = f"{type(exc).__name__}: {text}"
    return text.splitlines()[0][:300] if text else type(exc).__name__
