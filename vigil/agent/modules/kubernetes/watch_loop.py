"""The loop of one watched resource (its own thread): list when needed, then watch, reconnect with backoff.

One watch request at a time (`timeout_seconds`), so Vigil owns reconnection and backoff rather than the
client. When the API server no longer has the resourceVersion (410 Gone, as an ERROR event or an HTTP
status) the resource is listed again (see `watch_list`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from vigil.agent.modules.kubernetes.watch_client import CONNECT_SECONDS, lister
from vigil.agent.modules.kubernetes.watch_kind import WatchedKind, created_at
from vigil.agent.modules.kubernetes.watch_list import list_kind
from vigil.agent.modules.kubernetes.watch_normalize import identity, watch_event
from vigil.agent.modules.kubernetes.watch_reporter import WatchReporter
from vigil.config_kubernetes import WatchConfig

log = logging.getLogger(__name__)

# What the client raises on data it cannot read (JSON, missing keys, wrong types), not on network trouble.
_DATA_ERRORS = (KeyError, TypeError, ValueError, AttributeError)
_EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED"})


class Expired(Exception):
    """The API server no longer keeps the resourceVersion we asked for (410): list again."""


def follow(api: Any, kind: WatchedKind, stop: threading.Event, config: WatchConfig, reporter: WatchReporter) -> None:
    """List and watch `kind` until `stop`; every failure is logged, counted and retried with backoff."""
    delay = config.reconnect_min_seconds
    while not stop.is_set():
        started = time.monotonic()
        try:
            if kind.rv is None:
                list_kind(api, kind, stop, config, reporter)
            delivered = _watch(api, kind, stop, config, reporter)
            reporter.save(kind)
            reporter.answered(kind)
            kind.last_error = None
            if delivered or time.monotonic() - started > 1.0:
                delay = config.reconnect_min_seconds
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
                reporter.malformed(kind, None, f"the {kind.resource} watch or list could not be read ({problem})")
            if kind.down_since is None:
                kind.down_since = time.monotonic()
                log.warning("Kubernetes watch of %s on %s failed (%s); retrying with backoff",
                            kind.resource, reporter.server, problem)
        finally:
            kind.connected = False
        log.debug("Kubernetes watch of %s: %s; next try in %.1f s", kind.resource, problem, delay)
        stop.wait(delay)
        delay = min(delay * 2, config.reconnect_max_seconds)
    try:
        reporter.save(kind)  # stopping: keep where the watch got to
    except Exception as exc:
        log.warning("Kubernetes watch of %s: saving its position failed: %s", kind.resource, exc)


def _watch(api: Any, kind: WatchedKind, stop: threading.Event, config: WatchConfig,
           reporter: WatchReporter) -> bool:
    """One watch request from kind.rv until the server ends it; True when it delivered anything."""
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException

    watcher = watch.Watch(return_type="object")  # "object": raw dicts, no model building
    kind.watcher = watcher
    if stop.is_set():
        return False
    kind.counters["watch_requests"] += 1
    delivered = False
    list_or_watch = lister(api, kind.resource)

    def request(*args: Any, **kwargs: Any) -> Any:
        response = list_or_watch(*args, **kwargs)  # returns once the server has answered with a stream
        kind.response = response
        if stop.is_set():
            kind.unblock()
        kind.connected = True
        reporter.answered(kind)
        return response

    try:
        stream = watcher.stream(request, resource_version=kind.rv, allow_watch_bookmarks=True,
                                timeout_seconds=config.timeout_seconds,
                                _request_timeout=(CONNECT_SECONDS, config.timeout_seconds + 60))
        for event in stream:
            if stop.is_set():
                break
            delivered = True
            _handle(kind, event, reporter)
    except ApiException as exc:
        if exc.status == 410:
            raise Expired(f"resourceVersion {kind.rv} of {kind.resource} expired ({_first_line(exc)})") from exc
        raise
    finally:
        kind.watcher = kind.response = None
    return delivered


def _handle(kind: WatchedKind, event: Any, reporter: WatchReporter) -> None:
    """One watch event: a Vigil event for a real change; the resourceVersion moves on either way."""
    event_type = event.get("type") if isinstance(event, dict) else None
    obj = event.get("raw_object") if isinstance(event, dict) else None
    if event_type == "BOOKMARK":
        rv = identity(obj if isinstance(obj, dict) else {})[1]
        if rv:
            kind.counters["bookmarks"] += 1
            reporter.moved(kind, rv, kind.newest_created)
        return
    uid, rv = identity(obj) if isinstance(obj, dict) else ("", "")
    if event_type not in _EVENT_TYPES or not isinstance(obj, dict) or not rv:
        reporter.malformed(kind, event)
        return
    snapshot = kind.snapshot if kind.snapshot is not None else {}
    kind.snapshot = snapshot
    before = snapshot.get(uid)
    out, seen = watch_event(kind.resource, event_type, obj, cluster=reporter.cluster, previous=before,
                            agent=reporter.agent, when=time.time())
    created = max(kind.newest_created, created_at(obj))
    status_only = event_type == "MODIFIED" and before is not None and before.content == seen.content
    if status_only:  # nothing a rule looks at changed: only the resourceVersion moves on
        reporter.moved(kind, rv, created)
    else:
        reporter.store([out], kind.state(rv, created))
        kind.rv, kind.newest_created = rv, created  # stored: a failure above resumes before this event
        kind.unsaved, kind.saved_at = False, time.monotonic()
    if event_type == "DELETED":
        snapshot.pop(uid, None)
    else:
        snapshot[uid] = seen
    kind.counters["skipped_status_updates" if status_only else "events"] += 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, _DATA_ERRORS):
        text = f"{type(exc).__name__}: {text}"
    return text.splitlines()[0][:300] if text else type(exc).__name__
