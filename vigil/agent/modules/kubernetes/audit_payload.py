"""Pure: what a kube-apiserver (or a log line) sends -> audit events, refused with a clear reason.

The webhook backend posts `audit.k8s.io/v1 EventList` bodies; like Falco's k8saudit parser we also
take a JSON array of Events or one Event, with or without `apiVersion` (v1, v1beta1).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import orjson

_EVENT_KEYS: Final = ("auditID", "stage", "verb", "requestURI")
_AUDIT_GROUP: Final = "audit.k8s.io/"


class AuditPayloadError(ValueError):
    """The whole body is refused (the webhook answers 400 and Vigil raises malformed_input)."""


class AuditPayloadTooLarge(AuditPayloadError):
    """More events in one body than allowed: the sender should send smaller batches (the webhook answers 413)."""


@dataclass(slots=True)
class AuditBatch:
    """The events accepted from one body, and one reason per item that was refused."""

    events: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


# What an EventList or Event body says of itself; the items stay slices of the body. Made with
# defstruct: msgspec reads a class's annotations, which are not types once mypyc compiles the module.
_Envelope: Final = msgspec.defstruct("_Envelope", [
    ("kind", str), ("apiVersion", str | None, None), ("items", list[msgspec.Raw] | None, None)])
# The body's outer JSON only: each event stays a slice of the body (msgspec.Raw) until parse_item.
# The usual bodies (an array, an EventList, an Event) are read in one pass; anything else, and any
# body that fails, is read again by the general decoder, which says what is wrong.
_USUAL: Final = msgspec.json.Decoder(list[msgspec.Raw] | _Envelope)
_OUTER: Final = msgspec.json.Decoder(list[msgspec.Raw] | dict[str, msgspec.Raw])
_ITEMS: Final = msgspec.json.Decoder(list[msgspec.Raw])
_RAW: Final = msgspec.Raw


def parse_payload(body: bytes, *, max_events: int, max_event_bytes: int) -> AuditBatch:
    """An EventList, a JSON array of Events or one Event -> AuditBatch, every item parsed."""
    batch = AuditBatch()
    for index, item in enumerate(split_payload(body, max_events=max_events)):
        parsed = parse_item(item, index, max_event_bytes)
        if isinstance(parsed, str):
            batch.dropped.append(parsed)
        else:
            batch.events.append(parsed)
    return batch


def split_payload(body: bytes, *, max_events: int) -> list[msgspec.Raw]:
    """An EventList, a JSON array of Events or one Event -> each event's JSON, not yet parsed.

    Callers parse each item just before they use it (parse_item): a body of thousands of events
    then never exists as thousands of object trees at once, and the objects of one event are still
    in the CPU's cache when it is analysed (bench/k8s_audit_throughput.py).
    """
    usual = usual_items(body)
    if usual is not None:
        if len(usual) > max_events:
            raise AuditPayloadTooLarge(
                f"{len(usual)} audit events in one request, more than the limit of {max_events}")
        return usual
    try:
        outer = _OUTER.decode(body)
    except msgspec.ValidationError:  # neither an object nor an array (and maybe not JSON either)
        try:
            kind = _type(orjson.loads(body))
        except orjson.JSONDecodeError as exc:
            raise AuditPayloadError(f"not a Kubernetes audit event: the body is not valid JSON ({exc})") from None
        raise AuditPayloadError(f"not a Kubernetes audit event: expected a JSON object or array, got {kind}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec raises the latter for a key
        raise AuditPayloadError(f"not a Kubernetes audit event: the body is not valid JSON ({exc})") from None
    items = outer if isinstance(outer, list) else _items(outer, body)
    if len(items) > max_events:
        raise AuditPayloadTooLarge(
            f"{len(items)} audit events in one request, more than the limit of {max_events}")
    return items


def usual_items(body: bytes) -> list[msgspec.Raw] | None:
    """The items of an array, an EventList or an Event of audit.k8s.io, in one pass; None otherwise."""
    try:
        outer: Any = _USUAL.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if isinstance(outer, list):
        return outer
    version = outer.apiVersion
    if version is not None and not version.startswith(_AUDIT_GROUP):
        return None
    if outer.kind == "EventList":
        return outer.items if outer.items is not None else []
    if outer.kind == "Event":
        return [_RAW(body)]
    return None


def parse_item(item: msgspec.Raw, index: int, max_event_bytes: int) -> dict[str, Any] | str:
    """Item `index` of a split body -> the audit event, or why it is refused (a str): larger than
    `max_event_bytes` as sent, not JSON, or not an audit event."""
    size = len(item)
    if size > max_event_bytes:
        return f"audit event {_audit_id(_loads(item))} of {size} bytes is larger than the {max_event_bytes}-byte limit"
    try:
        obj = orjson.loads(memoryview(item))  # Raw has the buffer protocol
    except orjson.JSONDecodeError as exc:
        return f"item {index} is not an audit event: not valid JSON ({exc})"
    reason = _refusal(obj, index)
    return obj if reason is None else reason


def as_sent(item: msgspec.Raw) -> msgspec.Raw | None:
    """The item's JSON as its own bytes, for its alert to carry as sent (vigil/alert_data.py); None
    when it spans lines, which would break alerts.json's one alert per line. A copy: a view would
    keep the whole body alive as long as the alert."""
    text = bytes(item)
    if b"\n" in text or b"\r" in text:
        return None
    return _RAW(text)


def _loads(item: msgspec.Raw) -> Any:
    try:
        return orjson.loads(memoryview(item))
    except orjson.JSONDecodeError:
        return None


def _items(outer: dict[str, msgspec.Raw], body: bytes) -> list[msgspec.Raw]:
    kind = _loads(outer["kind"]) if "kind" in outer else None
    version = _loads(outer["apiVersion"]) if "apiVersion" in outer else None
    if version is not None and not (isinstance(version, str) and version.startswith(_AUDIT_GROUP)):
        # core/v1 EventList and Event (cluster events, not audit events) share the kind names
        raise AuditPayloadError(f"not a Kubernetes audit event: apiVersion must be audit.k8s.io/v1 or "
                                f"v1beta1, got {_show(version)}")
    if kind == "EventList" or (kind is None and "items" in outer):
        items = outer.get("items")
        if items is None or (len(items) == 4 and bytes(items) == b"null"):
            return []
        try:
            return _ITEMS.decode(items)
        except msgspec.DecodeError:  # a ValidationError: the outer pass checked it is JSON
            raise AuditPayloadError(f"not a Kubernetes audit event: EventList items must be an array, "
                                    f"got {_type(_loads(items))}") from None
    if kind == "Event" or (kind is None and any(k in outer for k in _EVENT_KEYS)):
        return [_RAW(body)]
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


def _audit_id(item: Any) -> str:
    value = item.get("auditID") if isinstance(item, dict) else None
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
