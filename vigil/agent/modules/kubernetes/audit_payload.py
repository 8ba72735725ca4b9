"""Pure: what a kube-apiserver (or a log line) sends -> audit events, refused with a clear reason.

The webhook backend posts `audit.k8s.io/v1 EventList` bodies; like Falco's k8saudit parser we also
take a JSON array of Events or one Event, with or without `apiVersion` (v1, v1beta1).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson

_EVENT_KEYS = ("auditID", "stage", "verb", "requestURI")
_AUDIT_GROUP = "audit.k8s.io/"


class AuditPayloadError(ValueError):
    """The whole body is refused (the webhook answers 400 and Vigil raises malformed_input)."""


class AuditPayloadTooLarge(AuditPayloadError):
    """More events in one body than allowed: the sender should send smaller batches (the webhook answers 413)."""


@dataclass(slots=True)
class AuditBatch:
    """The events accepted from one body, and one reason per item that was refused."""

    events: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def parse_payload(body: bytes, *, max_events: int, max_event_bytes: int) -> AuditBatch:
    """An EventList, a JSON array of Events or one Event -> AuditBatch.

    Items larger than `max_event_bytes` are dropped with a reason; they are measured (serialised again)
    only when the body itself is larger than the limit, so the common case costs nothing extra.
    """
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise AuditPayloadError(f"not a Kubernetes audit event: the body is not valid JSON ({exc})") from None
    items = _items(obj)
    if len(items) > max_events:
        raise AuditPayloadTooLarge(
            f"{len(items)} audit events in one request, more than the limit of {max_events}")
    batch = AuditBatch()
    measure = len(body) > max_event_bytes
    for index, item in enumerate(items):
        reason = _refusal(item, index)
        if reason is None and measure:
            size = len(orjson.dumps(item))
            if size > max_event_bytes:
                reason = (f"audit event {_audit_id(item)} of {size} bytes is larger than the "
                          f"{max_event_bytes}-byte limit")
        if reason is None:
            batch.events.append(item)
        else:
            batch.dropped.append(reason)
    return batch


def _items(obj: Any) -> list[Any]:
    if isinstance(obj, list):
        return obj
    if not isinstance(obj, dict):
        raise AuditPayloadError(
            f"not a Kubernetes audit event: expected a JSON object or array, got {_type(obj)}")
    kind = obj.get("kind")
    version = obj.get("apiVersion")
    if version is not None and not (isinstance(version, str) and version.startswith(_AUDIT_GROUP)):
        # core/v1 EventList and Event (cluster events, not audit events) share the kind names
        raise AuditPayloadError(f"not a Kubernetes audit event: apiVersion must be audit.k8s.io/v1 or "
                                f"v1beta1, got {_show(version)}")
    if kind == "EventList" or (kind is None and "items" in obj):
        items = obj.get("items")
        if items is None:
            return []
        if not isinstance(items, list):
            raise AuditPayloadError(f"not a Kubernetes audit event: EventList items must be an array, "
                                    f"got {_type(items)}")
        return items
    if kind == "Event" or (kind is None and any(k in obj for k in _EVENT_KEYS)):
        return [obj]
    if kind is None:
        raise AuditPayloadError("not a Kubernetes audit event: no kind and none of "
                                + "/".join(_EVENT_KEYS))
    raise AuditPayloadError(
        f"not a Kubernetes audit event: kind must be 'Event' or 'EventList', got {_show(kind)}")


def _refusal(item: Any, index: int) -> str | None:
    if not isinstance(item, dict):
        return f"item {index} is not an audit event: expected an object, got {_type(item)}"
    kind = item.get("kind")
    if kind is not None and kind != "Event":
        return f"item {index} is not an audit event: kind must be 'Event', got {_show(kind)}"
    version = item.get("apiVersion")
    if version is not None and not (isinstance(version, str) and version.startswith(_AUDIT_GROUP)):
        return f"item {index} is not an audit event: apiVersion must be audit.k8s.io/*, got {_show(version)}"
    return None


def _audit_id(item: dict[str, Any]) -> str:
    value = item.get("auditID")
    return value[:64] if isinstance(value, str) else "(no auditID)"


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _show(value: Any) -> str:
    return repr(value)[:80]


class AuditDedupe:
    """Drops exact repeats of (auditID, stage): a webhook retry, an EKS overlap, a Pub/Sub redelivery.

    A bounded LRU, so memory stays fixed; a repeat older than `entries` events gets through again.
    Events with no auditID cannot be told apart and always count as new.
    """

    def __init__(self, entries: int) -> None:
        self._entries = max(1, entries)
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.duplicates = 0

    def is_new(self, event: dict[str, Any]) -> bool:
        audit_id = event.get("auditID")
        if not isinstance(audit_id, str) or not audit_id:
            return True
        stage = event.get("stage")
        key = (audit_id, stage if isinstance(stage, str) else "")
        seen = self._seen
        if key in seen:
            seen.move_to_end(key)
            self.duplicates += 1
            return False
        seen[key] = None
        if len(seen) > self._entries:
            seen.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._seen)
