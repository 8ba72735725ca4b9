"""Every endpoint against what the store and the backend hold: real alerts, each filter, sort and page."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from vigil.alert import parse_wazuh_timestamp

from .api_support import Alert, FakeBackend, client, make_app, real_alerts

MAX_PAGE = 1000


@pytest.fixture(scope="module")
def stored() -> list[Alert]:
    return real_alerts()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, stored: list[Alert]) -> Iterator[tuple[TestClient, FakeBackend]]:
    app, backend, key = make_app(tmp_path_factory.mktemp("api"), stored, max_page_size=MAX_PAGE)
    with client(app, key) as admin:
        yield admin, backend


@pytest.fixture
def admin(api: tuple[TestClient, FakeBackend]) -> TestClient:
    return api[0]


def ids(alerts: list[Alert]) -> list[str]:
    return [a["id"] for a in alerts]


def everything(admin: TestClient, **params: Any) -> list[Alert]:
    """Every matching alert, following next_offset with a small page to exercise paging too."""
    items: list[Alert] = []
    offset: int | None = 0
    total = None
    while offset is not None:
        response = admin.get("/alerts", params={**params, "limit": 97, "offset": offset})
        assert response.status_code == 200, response.text
        page = response.json()
        total = page["total"] if total is None else total
        assert page["total"] == total and page["offset"] == offset and page["limit"] == 97
        items.extend(page["items"])
        offset = page["next_offset"]
    assert len(items) == total
    return items


def expected(stored: list[Alert], keep: Callable[[Alert], bool], sort: str = "-timestamp") -> list[str]:
    """What the store should answer: matching alerts sorted by the key, ties in storage order."""
    column: Callable[[Alert], Any] = {
        "timestamp": lambda a: parse_wazuh_timestamp(a["timestamp"]),
        "level": lambda a: a["rule"]["level"],
        "rule_id": lambda a: int(a["rule"]["id"]),
    }[sort.lstrip("-")]
    rows = [(column(a), seq, a["id"]) for seq, a in enumerate(stored) if keep(a)]
    return [alert_id for *_, alert_id in sorted(rows, reverse=sort.startswith("-"))]


def test_the_store_holds_a_varied_set(stored: list[Alert]) -> None:
    assert len(stored) > 300
    assert len({a["rule"]["level"] for a in stored}) >= 4
    assert {a["agent"]["id"] for a in stored} == {"001", "002"}


def test_default_is_every_alert_newest_first(admin: TestClient, stored: list[Alert]) -> None:
    assert ids(everything(admin)) == expected(stored, lambda a: True)


@pytest.mark.parametrize("sort", ["timestamp", "-timestamp", "level", "-level", "rule_id", "-rule_id"])
def test_sort(admin: TestClient, stored: list[Alert], sort: str) -> None:
    assert ids(everything(admin, sort=sort)) == expected(stored, lambda a: True, sort)


def test_order_keeps_storage_order(admin: TestClient, stored: list[Alert]) -> None:
    assert ids(everything(admin, order="asc")) == ids(stored)
    assert ids(everything(admin, order="desc")) == ids(stored)[::-1]


@pytest.mark.parametrize(("params", "keep"), [
    ({"level": 5}, lambda a: a["rule"]["level"] >= 5),
    ({"max_level": 4}, lambda a: a["rule"]["level"] <= 4),
    ({"level": 4, "max_level": 5}, lambda a: 4 <= a["rule"]["level"] <= 5),
    ({"rule_id": [87924, 87929]}, lambda a: a["rule"]["id"] in ("87924", "87929")),
    ({"agent": "002"}, lambda a: a["agent"]["id"] == "002"),
    ({"agent": "web-1"}, lambda a: a["agent"]["name"] == "web-1"),
    ({"agent": ["002", "web-1"]}, lambda a: a["agent"]["id"] == "002" or a["agent"]["name"] == "web-1"),
    ({"agent": "nobody"}, lambda a: False),
    ({"group": "container_exec"}, lambda a: "container_exec" in a["rule"]["groups"]),
    ({"group": ["container_created", "image_pulled"]},
     lambda a: bool({"container_created", "image_pulled"} & set(a["rule"]["groups"]))),
    ({"group": "container"}, lambda a: False),  # whole groups only, not a prefix of one
    ({"q": "SHADOW"}, lambda a: "shadow" in a["rule"]["description"].lower()),
    ({"q": "nginx"}, lambda a: "nginx" in str(a).lower()),
    ({"q": "100%_sure"}, lambda a: False),  # % and _ are plain characters
    ({"agent": "001", "level": 5, "group": "docker", "sort": "level"},
     lambda a: a["agent"]["id"] == "001" and a["rule"]["level"] >= 5),
], ids=lambda v: "&".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else "")
def test_filters(admin: TestClient, stored: list[Alert], params: dict[str, Any], keep: Callable[[Alert], bool]) -> None:
    got = ids(everything(admin, **params))
    assert got == expected(stored, keep, params.get("sort", "-timestamp"))
    if params not in ({"agent": "nobody"}, {"group": "container"}, {"q": "100%_sure"}):
        assert got, "a filter that should match something"


def test_text_search_reaches_into_the_alert_json(admin: TestClient, stored: list[Alert]) -> None:
    container = stored[0]["data"]["docker"]["Actor"]["ID"][:20]
    got = ids(everything(admin, q=container.upper()))
    assert stored[0]["id"] in got
    assert got == expected(stored, lambda a: container in str(a))


def test_time_range(admin: TestClient, stored: list[Alert]) -> None:
    times = sorted(parse_wazuh_timestamp(a["timestamp"]) for a in stored)
    middle = times[len(times) // 2]
    iso = datetime.fromtimestamp(middle, UTC).isoformat()
    assert ids(everything(admin, since=middle)) == expected(
        stored, lambda a: parse_wazuh_timestamp(a["timestamp"]) >= middle)
    assert ids(everything(admin, until=iso)) == expected(
        stored, lambda a: parse_wazuh_timestamp(a["timestamp"]) < middle)
    assert len(everything(admin, since="100000d")) == len(stored)
    assert everything(admin, since=times[-1] + 1) == []


def test_pages(admin: TestClient, stored: list[Alert]) -> None:
    page = admin.get("/alerts", params={"limit": 10, "offset": 5, "sort": "timestamp"}).json()
    assert (page["total"], page["offset"], page["limit"], page["next_offset"]) == (len(stored), 5, 10, 15)
    assert ids(page["items"]) == expected(stored, lambda a: True, "timestamp")[5:15]
    last = admin.get("/alerts", params={"limit": 10, "offset": len(stored) - 3}).json()
    assert (len(last["items"]), last["next_offset"]) == (3, None)
    past = admin.get("/alerts", params={"offset": len(stored) + 10}).json()
    assert (past["items"], past["next_offset"], past["total"]) == ([], None, len(stored))


def test_one_alert(admin: TestClient, stored: list[Alert]) -> None:
    assert admin.get(f"/alerts/{stored[7]['id']}").json() == stored[7]
    missing = admin.get("/alerts/1700000000.1")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no alert with id '1700000000.1'"}


@pytest.mark.parametrize(("params", "status", "word"), [
    ({"limit": MAX_PAGE + 1}, 400, "maximum page size"),
    ({"sort": "description"}, 422, "sort"),
    ({"since": "last tuesday"}, 400, "since"),
    ({"rule_id": 2**40}, 422, "rule_id"),
    ({"offset": 2**70}, 422, "offset"),
    ({"q": ""}, 422, "q"),
    ({"q": "x" * 201}, 422, "q"),
    ({"since": "9" * 400 + "-01-01"}, 400, "since"),
])
def test_bad_alert_queries(admin: TestClient, params: dict[str, Any], status: int, word: str) -> None:
    response = admin.get("/alerts", params=params)
    assert response.status_code == status, response.text
    body = response.json()
    assert word in body["error"] + " ".join(body.get("problems", []))


# ---- agents ---------------------------------------------------------------------------------------
def test_agents_list_filter_and_pages(admin: TestClient) -> None:
    every = admin.get("/agents").json()
    assert [a["id"] for a in every["items"]] == ["000", "001", "002"]
    assert (every["total"], every["next_offset"]) == (3, None)
    assert [a["id"] for a in admin.get("/agents", params={"status": "disconnected"}).json()["items"]] == ["002"]
    page = admin.get("/agents", params={"limit": 2}).json()
    assert ([a["id"] for a in page["items"]], page["next_offset"]) == (["000", "001"], 2)
    assert admin.get("/agents", params={"status": "sleepy"}).status_code == 422


def test_agent_by_id_or_name(admin: TestClient) -> None:
    assert admin.get("/agents/001").json()["name"] == "web-1"
    assert admin.get("/agents/db-1").json()["id"] == "002"
    missing = admin.get("/agents/nope")
    assert (missing.status_code, missing.json()) == (404, {"error": "no agent with id or name 'nope'"})


def test_remove_agent(tmp_path: Path) -> None:
    app, backend, key = make_app(tmp_path)
    admin = client(app, key)
    refused = admin.delete("/agents/000")
    assert (refused.status_code, refused.json()) == (409, {"error": "the local agent of vigil up cannot be removed"})
    assert admin.delete("/agents/db-1").json() == {"removed": "002"}
    assert admin.delete("/agents/002").status_code == 404
    assert backend.removed == ["002"]


def test_commands(api: tuple[TestClient, FakeBackend]) -> None:
    admin, backend = api
    assert admin.post("/agents/web-1/commands", json={"op": "ping"}).json() == {"pong": True}
    restart = admin.post("/agents/001/commands", json={"op": "restart-module", "args": {"module": "docker"}})
    assert restart.json() == {"restarted": "docker"}
    assert backend.commands[-2:] == [("001", "ping", {}, 10.0), ("001", "restart-module", {"module": "docker"}, 10.0)]
    unknown_module = admin.post("/agents/001/commands", json={"op": "restart-module", "args": {"module": "fim"}})
    assert unknown_module.status_code == 502 and "fim" in unknown_module.json()["error"]
    silent = admin.post("/agents/002/commands", json={"op": "ping", "timeout_seconds": 0.5})
    assert silent.status_code == 504 and "0.5" in silent.json()["error"]
    assert admin.post("/agents/nope/commands", json={"op": "ping"}).status_code == 404


@pytest.mark.parametrize(("body", "word"), [
    ({"op": "restart-module"}, "args.module"),
    ({"op": "reboot"}, "op"),
    ({"op": "ping", "extra": 1}, "extra"),
    ({"op": "ping", "timeout_seconds": 0}, "timeout_seconds"),
    ("not json", "invalid request"),
])
def test_bad_commands_are_422(admin: TestClient, body: Any, word: str) -> None:
    response = admin.post("/agents/001/commands", json=body) if isinstance(body, dict) else admin.post(
        "/agents/001/commands", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert word in response.json()["error"] + " ".join(response.json()["problems"])


# ---- rules, health, metrics -----------------------------------------------------------------------
def test_rules(admin: TestClient, api: tuple[TestClient, FakeBackend]) -> None:
    rules = api[1].rules.rules
    body = admin.get("/rules").json()
    assert [r["id"] for r in body["items"]] == sorted(rules) and body["total"] == len(rules)
    posture = admin.get("/rules", params={"group": "container_posture", "level": 10}).json()
    assert {r["id"] for r in posture["items"]} == {
        r.id for r in rules.values() if "container_posture" in r.groups and r.level >= 10}
    page = admin.get("/rules", params={"limit": 5, "offset": 5}).json()
    assert [r["id"] for r in page["items"]] == sorted(rules)[5:10] and page["total"] == len(rules)
    detail = admin.get("/rules/87901").json()
    assert (detail["level"], detail["file"]) == (3, "0560-docker.yml")
    assert detail["groups"] == ["docker", "container_created"]
    assert admin.get("/rules/1").json() == {"error": "no rule with id 1"}


def test_health(admin: TestClient) -> None:
    assert admin.get("/health").json() == {"status": "ok", "version": "0.1.0", "agents": 3}


def test_metrics_in_prometheus_text(admin: TestClient) -> None:
    response = admin.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert families["vigil_events_received"].type == "counter"
    assert families["vigil_events_received"].samples[0].value == 22
    levels = {s.labels["level"]: s.value for s in families["vigil_alerts_raised"].samples if s.name.endswith("_total")}
    assert levels == {"3": 4, "12": 1}
    depth = {s.labels["agent"]: s.value for s in families["vigil_agent_outbox_depth"].samples}
    assert depth == {"000": 0, "001": 3, "002": 0}


@pytest.mark.parametrize(("method", "path"), [("GET", "/nope"), ("PUT", "/alerts"), ("GET", "/rules/abc")])
def test_other_errors_are_json(admin: TestClient, method: str, path: str) -> None:
    response = admin.request(method, path)
    assert response.status_code in (404, 405, 422)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]
