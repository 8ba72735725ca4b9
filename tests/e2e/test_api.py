"""The HTTP API as a user calls it: one Vigil on a real dockerd, a known set of alerts, then every query.

The alerts come from docker actions in two batches with a timestamp taken between them:
batch 1 creates three containers (87901, level 3); batch 2 runs one container with
`--cap-add SYS_ADMIN` (200107, level 9, at create and at start) and removes one of the first
three (87902, level 5). alerts.json is the reference the API answers are checked against.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from .daemons import Dockerd
from .vigil_proc import Alert, VigilProcess, rule_is

CONNECT_TIMEOUT_S = 10.0
MAX_PAGE_SIZE = 1000  # ApiConfig.max_page_size default
_runs = itertools.count()


# ---- one Vigil and one known set of alerts for the module ----------------------------------------
@pytest.fixture(scope="module")
def vigil(dockerd: Dockerd, busybox_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VigilProcess]:
    config = {"analysis": {"fold_window_seconds": 0}}
    with VigilProcess(tmp_path_factory.mktemp("vigil-api"), dockerd.host, config) as proc:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not proc.health()["modules"]["docker"]["connected"]:
            assert time.monotonic() < deadline, f"Vigil did not connect to {dockerd.host}:\n{proc.log()}"
            time.sleep(0.05)
        time.sleep(0.3)  # "connected" is set just before the event stream is requested
        yield proc


@dataclass(frozen=True)
class Scenario:
    alerts: list[Alert]  # alerts.json once everything arrived, oldest first
    batch1: list[Alert]
    batch2: list[Alert]
    boundary: float  # epoch seconds between the two batches
    created: list[str]  # the three containers of batch 1
    capped: str  # the SYS_ADMIN container of batch 2


def epoch(alert: Alert) -> float:
    return datetime.strptime(alert["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def ids(alerts: list[Alert]) -> list[str]:
    return [a["id"] for a in alerts]


@pytest.fixture(scope="module")
def scenario(vigil: VigilProcess, dockerd: Dockerd, busybox_image: str) -> Iterator[Scenario]:
    run = next(_runs)
    created = [f"api{run}-c{i}" for i in range(3)]
    capped = f"api{run}-cap"
    for name in created:
        dockerd.cli("create", "--network", "none", "--name", name, busybox_image, "sleep", "1")
    for name in created:
        vigil.wait_for(rule_is(87901, name), timeout=2.0)
    time.sleep(0.1)
    boundary = time.time()
    time.sleep(0.1)
    mark = len(vigil.file_alerts())
    try:
        dockerd.cli("run", "-d", "--network", "none", "--cap-add", "SYS_ADMIN", "--name", capped,
                    busybox_image, "sleep", "300")
        dockerd.cli("rm", created[0])
        vigil.wait_for(rule_is(87902, created[0]), timeout=2.0, since=mark)
        deadline = time.monotonic() + 2.0
        while sum(rule_is(200107, capped)(a) for a in vigil.file_alerts()) < 2:
            assert time.monotonic() < deadline, [a["rule"]["description"] for a in vigil.file_alerts()]
            time.sleep(0.02)
        time.sleep(0.3)  # anything else those actions raise
        alerts = vigil.file_alerts()
        # The store is written with alerts.json; the API must have all of them too.
        assert httpx.get(f"{vigil.api}/alerts", params={"limit": 1}, headers=vigil.headers(),
                         timeout=5).json()["total"] == len(alerts)
        yield Scenario(
            alerts=alerts,
            batch1=[a for a in alerts if epoch(a) < boundary],
            batch2=[a for a in alerts if epoch(a) >= boundary],
            boundary=boundary,
            created=created,
            capped=capped,
        )
    finally:
        dockerd.cli("rm", "-f", capped, *created[1:], check=False)


@pytest.fixture(scope="module")
def api(vigil: VigilProcess, scenario: Scenario) -> Iterator[httpx.Client]:
    assert vigil.api is not None
    with httpx.Client(base_url=vigil.api, headers=vigil.headers(), timeout=5) as client:
        yield client


def get_alerts(api: httpx.Client, **params: Any) -> dict[str, Any]:
    response = api.get("/alerts", params={"limit": MAX_PAGE_SIZE, **params})
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def all_ids(api: httpx.Client, **params: Any) -> list[str]:
    """Ids of every matching alert, oldest first (the scenario fits in one page)."""
    page = get_alerts(api, order="asc", **params)
    assert page["next_offset"] is None and page["total"] == len(page["items"])
    return ids(page["items"])


# ---- the scenario is what the docker actions should have raised ----------------------------------
def test_scenario_raised_the_known_alerts(scenario: Scenario) -> None:
    def count(rule_id: int, name: str) -> int:
        return sum(rule_is(rule_id, name)(a) for a in scenario.alerts)

    assert [count(87901, name) for name in scenario.created] == [1, 1, 1]
    assert count(87902, scenario.created[0]) == 1
    assert count(200107, scenario.capped) == 2
    assert {a["rule"]["level"] for a in scenario.alerts if rule_is(200107)(a)} == {9}
    assert scenario.batch1 and scenario.batch2
    assert ids(scenario.batch1) + ids(scenario.batch2) == ids(scenario.alerts)
    assert all(a["rule"]["id"] == "87901" for a in scenario.batch1)


# ---- GET /health ----------------------------------------------------------------------------------
def test_health(api: httpx.Client, scenario: Scenario) -> None:
    response = api.get("/health")
    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "ok"
    assert health["alerts"] == len(scenario.alerts)
    assert health["events"] >= len(scenario.alerts)
    assert health["rules_loaded"] > 0
    assert health["uptime_seconds"] > 0
    assert health["decode_errors"] == 0
    docker = health["modules"]["docker"]
    assert docker["connected"] is True
    assert docker["events"] >= len(scenario.alerts)
    assert docker["restarts"] == 0


# ---- filters -------------------------------------------------------------------------------------
def test_minimum_level(api: httpx.Client, scenario: Scenario) -> None:
    page = get_alerts(api, level=9)
    assert page["items"], "the SYS_ADMIN container raised level-9 alerts"
    assert all(a["rule"]["level"] >= 9 for a in page["items"])
    assert sorted(ids(page["items"])) == sorted(a["id"] for a in scenario.alerts if a["rule"]["level"] >= 9)
    assert page["total"] == len(page["items"])


def test_maximum_level(api: httpx.Client, scenario: Scenario) -> None:
    assert all_ids(api, max_level=3) == [a["id"] for a in scenario.alerts if a["rule"]["level"] <= 3]
    assert all_ids(api, level=5, max_level=5) == [a["id"] for a in scenario.alerts if a["rule"]["level"] == 5]


def test_rule_id(api: httpx.Client, scenario: Scenario) -> None:
    created = all_ids(api, rule_id=87901)
    assert created == [a["id"] for a in scenario.alerts if a["rule"]["id"] == "87901"]
    assert len(created) >= 3


def test_rule_id_repeated(api: httpx.Client, scenario: Scenario) -> None:
    both = all_ids(api, rule_id=[87901, 87902])
    assert both == [a["id"] for a in scenario.alerts if a["rule"]["id"] in ("87901", "87902")]
    assert set(all_ids(api, rule_id=87902)) < set(both)
    assert all_ids(api, rule_id=[87901, 87902], level=5) == all_ids(api, rule_id=87902)


def test_unknown_rule_id_matches_nothing(api: httpx.Client) -> None:
    page = get_alerts(api, rule_id=1)
    assert (page["total"], page["items"], page["next_offset"]) == (0, [], None)


# ---- time bounds ----------------------------------------------------------------------------------
def time_forms(moment: float) -> list[str]:
    as_utc = datetime.fromtimestamp(moment, UTC)
    return [
        as_utc.isoformat(),  # 2026-11-26T10:00:00.123456+00:00
        as_utc.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",  # 2026-11-26T10:00:00.123Z
        f"{moment:.3f}",  # epoch seconds
    ]


@pytest.mark.parametrize("form", [0, 1, 2], ids=["iso8601-offset", "iso8601-z", "epoch"])
def test_since_and_until(api: httpx.Client, scenario: Scenario, form: int) -> None:
    boundary = time_forms(scenario.boundary)[form]
    assert all_ids(api, since=boundary) == ids(scenario.batch2)
    assert all_ids(api, until=boundary) == ids(scenario.batch1)
    start = time_forms(epoch(scenario.alerts[0]))[form]
    assert all_ids(api, since=start, until=boundary) == ids(scenario.batch1)


def test_since_age_and_empty_window(api: httpx.Client, scenario: Scenario) -> None:
    assert all_ids(api, since="1h") == ids(scenario.alerts)
    future = time_forms(time.time() + 3600)[1]
    assert all_ids(api, since=future) == []
    assert all_ids(api, since=time_forms(scenario.boundary)[2], until=time_forms(scenario.boundary)[2]) == []


# ---- paging and order -----------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_pages_of_two_cover_everything_once(api: httpx.Client, scenario: Scenario, order: str) -> None:
    seen: list[str] = []
    offset: int | None = 0
    pages = 0
    while offset is not None:
        page = get_alerts(api, limit=2, offset=offset, order=order)
        assert page["total"] == len(scenario.alerts)
        assert (page["offset"], page["limit"]) == (offset, 2)
        assert 1 <= len(page["items"]) <= 2
        seen.extend(ids(page["items"]))
        assert page["next_offset"] in (None, offset + len(page["items"]))
        offset = page["next_offset"]
        pages += 1
        assert pages <= len(scenario.alerts), "next_offset never ends"
    expected = ids(scenario.alerts)
    assert seen == (expected if order == "asc" else expected[::-1])
    assert len(set(seen)) == len(seen)
    assert pages == (len(expected) + 1) // 2


def test_offset_past_the_end(api: httpx.Client, scenario: Scenario) -> None:
    page = get_alerts(api, offset=len(scenario.alerts) + 5)
    assert (page["total"], page["items"], page["next_offset"]) == (len(scenario.alerts), [], None)


def test_order(api: httpx.Client, scenario: Scenario) -> None:
    asc = ids(get_alerts(api, order="asc")["items"])
    desc = ids(get_alerts(api, order="desc")["items"])
    assert asc == ids(scenario.alerts)
    assert desc == asc[::-1]
    assert ids(get_alerts(api)["items"]) == desc, "newest first by default"


# ---- one alert -----------------------------------------------------------------------------------
def test_alert_by_id_is_the_alert_in_alerts_json(api: httpx.Client, scenario: Scenario) -> None:
    for alert in scenario.alerts:
        response = api.get(f"/alerts/{alert['id']}")
        assert response.status_code == 200
        assert response.json() == alert


def test_unknown_alert_id_is_404_json(api: httpx.Client) -> None:
    response = api.get("/alerts/1700000000.4242")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert "1700000000.4242" in body["error"]


# ---- bad input: a clear JSON error, never a 500 ---------------------------------------------------
@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"level": "abc"}, 422, ["level"]),
        ({"level": "99"}, 422, ["level", "16"]),
        ({"max_level": "-1"}, 422, ["max_level"]),
        ({"rule_id": "abc"}, 422, ["rule_id"]),
        ({"limit": "0"}, 422, ["limit"]),
        ({"offset": "-1"}, 422, ["offset"]),
        ({"limit": "100000"}, 400, ["limit", str(MAX_PAGE_SIZE)]),
        ({"since": "yesterdayish"}, 400, ["since", "yesterdayish", "epoch", "ISO 8601", "15m"]),
        ({"until": "tomorrow-ish"}, 400, ["until", "epoch", "ISO 8601"]),
        ({"since": ""}, 400, ["since"]),
        ({"order": "sideways"}, 422, ["order"]),
    ],
    ids=lambda v: "-".join(f"{k}={str(x)[:12]}" for k, x in v.items()) if isinstance(v, dict) else str(v),
)
def test_bad_query_is_a_clear_json_error(api: httpx.Client, params: dict[str, str], status: int,
                                         words: list[str]) -> None:
    response = api.get("/alerts", params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    text = body["error"] + " " + " ".join(body.get("problems", []))
    if status == 422:
        assert body["error"] == "invalid request" and body["problems"]
    for word in words:
        assert word in text, body


def test_ten_kilobyte_query_string(api: httpx.Client, scenario: Scenario) -> None:
    # An unknown parameter is ignored: the answer is the normal one.
    response = api.get("/alerts", params={"junk": "x" * 10_000, "limit": MAX_PAGE_SIZE})
    assert response.status_code == 200, response.text[:300]
    assert response.json()["total"] == len(scenario.alerts)
    # A 10 kB time is refused in a few words, not a 500.
    response = api.get("/alerts", params={"since": "9" * 5_000 + "x" * 5_000})
    assert response.status_code == 400, response.text[:300]
    assert "since" in response.json()["error"]
    # Many repeated rule ids are one valid filter.
    response = api.get("/alerts", params={"rule_id": ["87901"] * 1_400})
    assert response.status_code == 200, response.text[:300]
    assert response.json()["total"] == sum(a["rule"]["id"] == "87901" for a in scenario.alerts)


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/no/such/path", 404), ("GET", "/alertz", 404),
                                                        ("DELETE", "/alerts", 405)])
def test_unknown_route_is_a_json_error(api: httpx.Client, method: str, path: str, status: int) -> None:
    response = api.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    assert path in body["error"], body
    if status == 405:
        assert "GET" in response.headers["allow"]


# ---- authentication ----------------------------------------------------------------------------------
def test_without_the_key_every_endpoint_but_the_schema_is_refused(vigil: VigilProcess) -> None:
    for path in ("/health", "/alerts", "/rules", "/agents", "/metrics"):
        response = httpx.get(f"{vigil.api}{path}", timeout=5)
        assert response.status_code == 401, path
        assert response.json()["error"]
    assert httpx.get(f"{vigil.api}/openapi.json", timeout=5).status_code == 200


def test_the_local_agent_and_metrics(api: httpx.Client, scenario: Scenario) -> None:
    [agent] = api.get("/agents").json()["items"]
    assert (agent["id"], agent["status"]) == ("000", "active")
    assert api.delete("/agents/000").status_code == 409
    assert api.post("/agents/000/commands", json={"op": "ping"}).json()["pong"] is True
    metrics = api.get("/metrics").text
    for level, count in Counter(a["rule"]["level"] for a in scenario.alerts).items():
        assert f'vigil_alerts_raised_total{{level="{level}"}} {float(count)}' in metrics, metrics


# ---- rules and the schema ---------------------------------------------------------------------------
def test_rules(api: httpx.Client) -> None:
    response = api.get("/rules")
    assert response.status_code == 200
    body = response.json()
    by_id = {rule["id"]: rule for rule in body["items"]}
    assert body["total"] == len(body["items"]) == len(by_id)
    assert by_id[87901]["level"] == 3
    assert by_id[87901]["description"] == "Docker: Container $(docker.Actor.Attributes.name) created"
    assert by_id[200100]["level"] == 12
    assert by_id[200107]["level"] == 9
    assert "container_posture" in by_id[200100]["groups"]


def test_rules_by_group(api: httpx.Client) -> None:
    everything = api.get("/rules").json()["items"]
    body = api.get("/rules", params={"group": "container_posture"}).json()
    listed = {rule["id"] for rule in body["items"]}
    assert listed == {r["id"] for r in everything if "container_posture" in r["groups"]}
    assert {200100, 200107} <= listed
    assert 87901 not in listed
    assert body["total"] == len(listed)
    assert api.get("/rules", params={"group": "no_such_group"}).json() == {"total": 0, "items": []}


def test_rules_bad_level(api: httpx.Client) -> None:
    response = api.get("/rules", params={"level": "high"})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid request"


def test_openapi_schema(api: httpx.Client) -> None:
    response = api.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "Vigil"
    assert {"/alerts", "/alerts/{alert_id}", "/health", "/rules"} <= set(schema["paths"])
    parameters = {p["name"] for p in schema["paths"]["/alerts"]["get"]["parameters"]}
    assert {"level", "max_level", "rule_id", "since", "until", "limit", "offset", "order"} <= parameters
