"""Event in, alerts out: analysis, folding with a fake clock, and the alert JSON users and dashboards read."""

from __future__ import annotations

import re
from typing import Any

import pytest

import vigil.alert as alert_module
from vigil.alert import AlertIds, parse_wazuh_timestamp, wazuh_timestamp
from vigil.event import AgentRef, Event
from vigil.manager.analysis.folding import Folder
from vigil.manager.pipeline import DEFAULT_FOLD_IGNORE, Pipeline

from .support import TIMESTAMP_RE, analyzer, docker_event, docker_obj, exec_event, inspect_json

SECOND = 1_000_000_000
T0 = 1_795_702_990 * SECOND


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def pipeline(window: float = 60.0, clock: Clock | None = None, min_level: int = 3) -> Pipeline:
    return Pipeline(
        analyzer(min_level),
        Folder(window, DEFAULT_FOLD_IGNORE),
        store=None,
        alerts_file=None,
        clock=clock or Clock(),
    )


def ids(alerts: list[dict[str, Any]]) -> list[str]:
    return [a["rule"]["id"] for a in alerts]


# ---- folding through the pipeline --------------------------------------------------------------


def test_identical_alerts_fold_into_one_summary() -> None:
    clock = Clock()
    pipe = pipeline(clock=clock)
    outs = []
    for i in range(4):
        clock.now = 1000.0 + i * 10
        outs.append(
            pipe.process(exec_event("cat /etc/hostname", time_nano=T0 + i * SECOND, exec_id=str(i) * 64))
        )
    assert [len(o) for o in outs] == [1, 0, 0, 0]
    first = outs[0][0]
    assert first["rule"]["firedtimes"] == 1
    clock.now = 1059.0
    assert pipe.tick() == []
    clock.now = 1060.0
    [summary] = pipe.tick()
    assert summary["rule"]["id"] == "87907"
    assert summary["rule"]["firedtimes"] == 4
    assert summary["vigil"]["fold"] == {
        "first_alert": first["id"],
        "occurrences": 4,
        "first_seen": wazuh_timestamp(1000.0),
        "last_seen": wazuh_timestamp(1030.0),
    }
    assert summary["id"] != first["id"]
    assert summary["timestamp"] == wazuh_timestamp(1030.0)
    assert summary["data"] == first["data"]
    assert first["rule"]["firedtimes"] == 1 and "vigil" not in first  # the first alert is not changed
    assert (pipe.stats.events, pipe.stats.alerts, pipe.stats.folded) == (4, 2, 3)
    assert pipe.tick() == []


def test_summary_goes_out_with_the_next_event_after_the_window() -> None:
    clock = Clock()
    pipe = pipeline(clock=clock)
    pipe.process(exec_event("id "))
    pipe.process(exec_event("id "))
    clock.now += 61
    out = pipe.process(exec_event("id "))
    assert [(a["rule"]["id"], a["rule"]["firedtimes"]) for a in out] == [("87907", 1), ("87907", 2)]


def test_different_commands_are_not_folded() -> None:
    pipe = pipeline()
    out = [
        a for c in ("cat /etc/hostname", "cat /etc/shadow", "ls /root") for a in pipe.process(exec_event(c))
    ]
    assert len(out) == 3
    assert pipe.stats.folded == 0


def test_window_zero_emits_every_alert() -> None:
    clock = Clock()
    pipe = pipeline(window=0, clock=clock)
    outs = [pipe.process(exec_event("id ")) for _ in range(3)]
    assert [len(o) for o in outs] == [1, 1, 1]
    clock.now += 3600
    assert pipe.tick() == [] and pipe.drain() == []


def test_drain_flushes_open_folds() -> None:
    pipe = pipeline()
    for _ in range(3):
        pipe.process(exec_event("id "))
    [summary] = pipe.drain()
    assert summary["rule"]["firedtimes"] == 3


def test_burst_alert_is_not_folded_away() -> None:
    pipe = pipeline()
    out = [
        a
        for i in range(5)
        for a in pipe.process(exec_event("sh ", time_nano=T0 + i * SECOND, exec_id=str(i) * 64))
    ]
    assert ids(out) == ["87908", "200140"]


def test_below_minimum_level_is_counted_not_alerted() -> None:
    pipe = pipeline()
    assert pipe.process(docker_event(docker_obj("container", "exec_die"))) == []
    assert pipe.stats.below_threshold == 1
    assert pipe.stats.alerts == 0


def test_undecodable_event_is_counted_not_raised() -> None:
    pipe = pipeline()
    bad = Event(
        module="logs",
        location="/var/log/app.json",
        timestamp=0.0,
        data={},
        decoder="json",
        raw='{"integration": "docker", "docker": ',
    )
    assert pipe.process(bad) == []
    not_object = Event(module="logs", location="x", timestamp=0.0, data={}, decoder="json", raw="[1]")
    assert pipe.process(not_object) == []
    assert pipe.stats.decode_errors == 2


def test_listeners_see_each_alert() -> None:
    pipe = pipeline()
    seen: list[str] = []
    pipe.on_alert(lambda a: seen.append(a["rule"]["id"]))
    pipe.process(docker_event(docker_obj("container", "create")))
    pipe.process(docker_event(docker_obj("container", "exec_die")))
    assert seen == ["87901"]
    assert pipe.stats.by_level == {3: 1}
    assert pipe.stats.by_module == {"docker": 2}


# ---- the alert JSON ----------------------------------------------------------------------------


def privileged_create() -> Event:
    from vigil.agent.modules.docker import normalize

    posture = normalize.posture(inspect_json(host={"Privileged": True}))
    return docker_event(docker_obj("container", "create", time_nano=T0 + 123_456_789), {"container": posture})


def test_alert_shape() -> None:
    [alert] = pipeline().process(privileged_create())
    assert list(alert) == ["timestamp", "rule", "agent", "manager", "id", "decoder", "location", "data"]
    assert re.match(TIMESTAMP_RE, alert["timestamp"])
    assert alert["timestamp"] == wazuh_timestamp(T0 / SECOND + 0.123456789)
    assert alert["timestamp"].endswith(".123+0000")
    rule = alert["rule"]
    assert rule["id"] == "200100" and isinstance(rule["id"], str)
    assert rule["level"] == 12 and isinstance(rule["level"], int)
    assert rule["description"] == "Docker: Privileged container web (create) from image nginx"
    assert rule["firedtimes"] == 1 and rule["mail"] is False
    assert rule["groups"] == ["docker", "container_posture", "privileged_container"]
    assert rule["mitre"] == {
        "id": ["T1611", "T1610"],
        "tactic": ["Privilege Escalation", "Defense Evasion", "Execution"],
        "technique": ["Escape to Host", "Deploy Container"],
    }
    assert rule["pci_dss"] == ["2.2"] and rule["nist_800_53"] == ["CM.7"]
    assert "gdpr" not in rule and "hipaa" not in rule
    assert alert["agent"] == {"id": "001", "name": "host1", "ip": "10.0.0.1"}
    assert alert["manager"] == {"name": "vigil-test-manager"}
    assert re.match(r"^\d{10}\.\d{9}$", alert["id"])
    assert alert["decoder"] == {"name": "json"}
    assert alert["location"] == "docker"
    assert alert["data"]["docker"]["Action"] == "create"
    assert alert["data"]["container"]["privileged"] is True
    assert "full_log" not in alert


def test_compliance_blocks_are_lists() -> None:
    [alert] = pipeline().process(docker_event(docker_obj("container", "create")))
    rule = alert["rule"]
    assert rule["id"] == "87901"
    assert rule["pci_dss"] == ["10.2.7"]
    assert rule["hipaa"] == ["164.312.b"]
    assert rule["nist_800_53"] == ["AU.14"]
    assert rule["tsc"] == ["CC6.8", "CC7.2", "CC7.3"]
    assert rule["mitre"] == {
        "id": ["T1610"],
        "tactic": ["Defense Evasion", "Execution"],
        "technique": ["Deploy Container"],
    }


def test_alert_without_ip_and_with_raw_line() -> None:
    agent = AgentRef("003", "laptop")
    event = Event(
        module="docker",
        location="docker",
        timestamp=0.0,
        decoder="vigil",
        agent=agent,
        data={"vigil": {"module": "docker", "kind": "malformed_input", "error": "bad"}},
        raw="{oops",
    )
    [alert] = pipeline().process(event)
    assert alert["agent"] == {"id": "003", "name": "laptop"}
    assert alert["full_log"] == "{oops"
    assert alert["timestamp"] == "1970-01-01T00:00:00.000+0000"


def test_alert_ids_increase() -> None:
    pipe = pipeline(window=0)
    alert_ids = [
        a["id"] for _ in range(50) for a in pipe.process(docker_event(docker_obj("container", "create")))
    ]
    assert len(set(alert_ids)) == 50
    assert alert_ids == sorted(alert_ids, key=lambda s: tuple(int(p) for p in s.split(".")))


@pytest.mark.parametrize(("clock", "expected"), [
    ([1_795_702_990_703_956_839, 1_795_702_990_703_956_839], ["1795702990.703956839", "1795702990.703956840"]),
    ([5, 5], ["0.000000005", "0.000000006"]),
    ([0, -3], ["0.000000001", "0.000000002"]),
])
def test_alert_id_format_seconds_dot_nine_digits(
    monkeypatch: pytest.MonkeyPatch, clock: list[int], expected: list[str]
) -> None:
    ticks = iter(clock)
    monkeypatch.setattr(alert_module.time, "time_ns", lambda: next(ticks))
    ids = AlertIds()
    assert [ids.next(), ids.next()] == expected


def test_timestamp_round_trip() -> None:
    text = wazuh_timestamp(1599186260.2654226)
    assert text == "2020-09-04T02:24:20.265+0000"
    assert abs(parse_wazuh_timestamp(text) - 1599186260.265) < 1e-6


def test_a_fault_in_analysis_becomes_an_alert_and_the_stream_goes_on() -> None:
    real = analyzer()

    class Exploding:
        """The real analyzer, failing on one module's events as a bug in a rule or decoder would.
        (A wrapper: the compiled Analyzer cannot be subclassed from Python.)"""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def analyse(self, event: Event, trace: Any = None) -> Any:
            if event.module == "boom":
                raise KeyError("x")
            return real.analyse(event, trace)

    pipe = Pipeline(Exploding(), Folder(0, DEFAULT_FOLD_IGNORE), store=None, alerts_file=None,  # type: ignore[arg-type]
                    clock=Clock())
    bad = Event(module="boom", location="docker", timestamp=1.0, decoder="json", data={"integration": "docker"})
    out = pipe.process(bad)
    assert [(a["rule"]["id"], a["rule"]["level"]) for a in out] == [("200004", 7)]
    assert out[0]["data"]["vigil"]["error"] == "KeyError: 'x'"
    assert out[0]["data"]["vigil"]["event_id"] == bad.id
    assert pipe.stats.analysis_errors == 1
    follow = pipe.process(exec_event("cat /etc/passwd"))
    assert ids(follow) == ["87907"]
