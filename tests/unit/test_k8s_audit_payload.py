"""parse_payload, split_payload/parse_item and AuditDedupe: every shape a kube-apiserver (or Falco's
parser) accepts, and refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from vigil.agent.modules.kubernetes.audit_payload import (
    AuditDedupe,
    AuditPayloadError,
    as_sent,
    parse_item,
    parse_payload,
    split_payload,
    usual_items,
)

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "k8s-audit" / "falco-traces"
LIMITS = {"max_events": 10_000, "max_event_bytes": 1024 * 1024}


def event(audit_id: str = "a1", stage: str = "ResponseComplete", **more: Any) -> dict[str, Any]:
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": audit_id, "stage": stage,
            "verb": "get", "requestURI": "/api/v1/pods", **more}


@pytest.mark.parametrize("api_version", ["audit.k8s.io/v1", "audit.k8s.io/v1beta1", None])
def test_event_list_of_any_version_gives_its_items(api_version: str | None) -> None:
    items = [event("a1"), event("a2")]
    body: dict[str, Any] = {"kind": "EventList", "items": items}
    if api_version:
        body["apiVersion"] = api_version
        for item in items:
            item["apiVersion"] = api_version
    else:
        for item in items:
            del item["apiVersion"]
    batch = parse_payload(orjson.dumps(body), **LIMITS)
    assert [e["auditID"] for e in batch.events] == ["a1", "a2"]
    assert batch.dropped == []


def test_json_array_and_single_event_are_accepted() -> None:
    assert [e["auditID"] for e in parse_payload(orjson.dumps([event("x"), event("y")]), **LIMITS).events] == [
        "x", "y"]
    assert parse_payload(orjson.dumps(event("z")), **LIMITS).events[0]["auditID"] == "z"
    bare = event("w")
    del bare["kind"]
    assert parse_payload(orjson.dumps(bare), **LIMITS).events == [bare]


def test_captured_fixture_lines_parse() -> None:
    path = TRACES / "exec_pod.json"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    batch = parse_payload(path.read_bytes(), **LIMITS)
    assert batch.events[0]["objectRef"]["subresource"] == "exec"


@pytest.mark.parametrize(("body", "message"), [
    (b'{"kind": 0}', "not a Kubernetes audit event: kind must be 'Event' or 'EventList', got 0"),
    (b'{"kind": "Pod"}', "kind must be 'Event' or 'EventList', got 'Pod'"),
    (b'{"kind": "EventList", "apiVersion": "v1", "items": []}',
     "not a Kubernetes audit event: apiVersion must be audit.k8s.io/v1 or v1beta1, got 'v1'"),
    (b'{"kind": "Event", "apiVersion": 3}', "apiVersion must be audit.k8s.io/v1 or v1beta1, got 3"),
    (b'{"hello": 1}', "not a Kubernetes audit event: no kind"),
    (b'{"kind": "EventList", "items": 3}', "EventList items must be an array, got int"),
    (b'"text"', "expected a JSON object or array, got str"),
    (b'42', "expected a JSON object or array, got int"),
    (b'{"kind": "Event", ', "the body is not valid JSON"),
    (b'"text" and more', "the body is not valid JSON"),
    (b'7 8', "the body is not valid JSON"),
    (b'{"kind": "EventList", "items": [{}]} trailing', "the body is not valid JSON"),
    (b'\xff\xfe', "the body is not valid JSON"),
    (b'', "the body is not valid JSON"),
])
def test_refused_bodies_say_why(body: bytes, message: str) -> None:
    with pytest.raises(AuditPayloadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_payload(body, **LIMITS)


def test_fal_01_003_fixture_is_refused_clearly() -> None:
    path = TRACES / "fal_01_003.json"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    with pytest.raises(AuditPayloadError) as info:
        parse_payload(path.read_bytes(), **LIMITS)
    assert str(info.value) == "not a Kubernetes audit event: kind must be 'Event' or 'EventList', got 0"


def test_too_many_events_is_refused_with_the_count() -> None:
    body = orjson.dumps({"kind": "EventList", "items": [{"auditID": str(i)} for i in range(100_000)]})
    with pytest.raises(AuditPayloadError, match="100000 audit events in one request, more than the limit of 10000"):
        parse_payload(body, **LIMITS)


def test_bad_items_and_oversized_items_are_dropped_the_rest_kept() -> None:
    big = event("big", requestObject={"data": "x" * 5000})
    core = {"kind": "Event", "apiVersion": "v1", "involvedObject": {"kind": "Pod"}}
    body = orjson.dumps({"kind": "EventList", "items": [event("ok"), big, 7, {"kind": "Pod"}, core]})
    batch = parse_payload(body, max_events=10, max_event_bytes=4096)
    assert [e["auditID"] for e in batch.events] == ["ok"]
    assert len(batch.dropped) == 4
    assert "audit event big of" in batch.dropped[0] and "larger than the 4096-byte limit" in batch.dropped[0]
    assert batch.dropped[1] == "item 2 is not an audit event: expected an object, got int"
    assert batch.dropped[2] == "item 3 is not an audit event: kind must be 'Event', got 'Pod'"
    assert batch.dropped[3] == "item 4 is not an audit event: apiVersion must be audit.k8s.io/*, got 'v1'"


def test_an_item_is_measured_as_sent() -> None:
    body = orjson.dumps([event("a")])
    assert parse_payload(body, max_events=10, max_event_bytes=len(body) - 2).dropped == []  # less the []
    assert "is larger than" in parse_payload(body, max_events=10, max_event_bytes=len(body) - 3).dropped[0]


def test_an_item_that_is_not_utf8_is_dropped_with_a_reason_and_the_others_kept() -> None:
    body = b'{"kind":"EventList","items":[{"auditID":"bad","verb":"\xff"},' + orjson.dumps(event("good")) + b"]}"
    batch = parse_payload(body, **LIMITS)
    assert [e["auditID"] for e in batch.events] == ["good"]
    assert batch.dropped[0].startswith("item 0 is not an audit event: not valid JSON (")


def test_split_items_are_each_events_json_as_sent() -> None:
    body = b'{"kind": "EventList", "items": [ {"auditID": "x",  "verb": "get"} , {"auditID": "y"} ]}'
    items = split_payload(body, max_events=10)
    assert [bytes(item) for item in items] == [b'{"auditID": "x",  "verb": "get"}', b'{"auditID": "y"}']
    assert parse_item(items[0], 0, 1024) == {"auditID": "x", "verb": "get"}
    assert [bytes(item) for item in split_payload(b' {"auditID": "z"} ', max_events=10)] == [b' {"auditID": "z"} ']


def test_as_sent_is_the_items_own_bytes_unless_it_spans_lines() -> None:
    body = orjson.dumps([event("a"), event("b")])
    first = split_payload(body, max_events=10)[0]
    kept = as_sent(first)
    assert kept is not None and bytes(kept) == orjson.dumps(event("a"))
    pretty = orjson.dumps([event("a")], option=orjson.OPT_INDENT_2)
    assert as_sent(split_payload(pretty, max_events=10)[0]) is None


def test_empty_event_list_is_fine() -> None:
    assert parse_payload(b'{"kind":"EventList","items":null}', **LIMITS).events == []


def test_dedupe_drops_exact_repeats_of_audit_id_and_stage() -> None:
    dedupe = AuditDedupe(entries=2)
    assert dedupe.is_new(event("a", "ResponseStarted"))
    assert dedupe.is_new(event("a", "ResponseComplete"))  # same request, other stage: kept
    assert not dedupe.is_new(event("a", "ResponseComplete"))  # a webhook retry
    assert dedupe.duplicates == 1
    assert dedupe.is_new(event("b"))  # evicts the oldest, (a, ResponseStarted)
    assert len(dedupe) == 2
    assert dedupe.is_new(event("a", "ResponseStarted"))  # forgotten: bounded memory


def test_dedupe_cannot_tell_events_without_audit_id_apart() -> None:
    dedupe = AuditDedupe(entries=10)
    assert dedupe.is_new({"stage": "ResponseComplete"})
    assert dedupe.is_new({"stage": "ResponseComplete"})
    assert dedupe.is_new({"auditID": 5, "stage": []})


def test_mangled_bodies_are_parsed_or_refused_never_crash() -> None:
    """Bytes cut, flipped, dropped or repeated anywhere in a body: an AuditPayloadError or a batch."""
    import random

    rng = random.Random(7)
    good = orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1",
                         "items": [event("a", requestObject={"spec": {"x": [1, "\u00e9", None]}}), event("b")]})
    outcomes = {"batch": 0, "refused": 0}
    for _ in range(3000):
        body = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            if not body:
                break
            at = rng.randrange(len(body))
            choice = rng.random()
            if choice < 0.3:
                body[at] = rng.randrange(256)
            elif choice < 0.5:
                del body[at:at + rng.randint(1, 20)]
            elif choice < 0.7:
                body = body[:at]
            else:
                body[at:at] = bytes(rng.choice([b"\n", b"]", b"}", b'"', b",", b"\xff", b"null", b" 1"]))
        try:
            batch = parse_payload(bytes(body), **LIMITS)
        except AuditPayloadError:
            outcomes["refused"] += 1
        else:
            assert all(isinstance(e, dict) for e in batch.events)
            outcomes["batch"] += 1
    assert outcomes["batch"] > 50 and outcomes["refused"] > 50


def test_the_usual_bodies_are_split_in_one_pass() -> None:
    """An array, an EventList and an Event: read once; other bodies go through the general decoder."""
    items = [event("a"), event("b")]
    for body, count in [(orjson.dumps(items), 2), (orjson.dumps({"kind": "EventList", "items": items}), 2),
                        (orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": None}), 0),
                        (orjson.dumps(event("c")), 1)]:
        usual = usual_items(body)
        assert usual is not None and len(usual) == count
        assert [bytes(i) for i in usual] == [bytes(i) for i in split_payload(body, max_events=10)]
    for body in [orjson.dumps({"items": items}), orjson.dumps({"auditID": "x"}), b'{"kind": 0}',
                 orjson.dumps({"kind": "EventList", "apiVersion": "v1", "items": []}), b"{bad"]:
        assert usual_items(body) is None
