"""Folding: the first alert of a kind goes out, repeats in the window become one summary with firedtimes."""

from __future__ import annotations

import copy
from typing import Any

from vigil.manager.analysis.folding import Folder
from vigil.manager.pipeline import DEFAULT_FOLD_IGNORE


def alert(
    command: str = "cat /etc/hostname",
    agent: str = "001",
    exec_id: str = "a" * 64,
    time_nano: int = 1,
    rule_id: str = "87907",
) -> dict[str, Any]:
    return {
        "timestamp": "2026-11-26T15:27:00.000+0000",
        "rule": {
            "id": rule_id,
            "level": 3,
            "description": "Docker: Command launched in container web",
            "firedtimes": 1,
        },
        "agent": {"id": agent, "name": "host"},
        "id": f"1795702990.{time_nano:09d}",
        "location": "docker",
        "data": {
            "integration": "docker",
            "docker": {
                "Type": "container",
                "Action": f"exec_start: {command}",
                "time": time_nano // 10**9,
                "timeNano": time_nano,
                "Actor": {"ID": "c" * 64, "Attributes": {"name": "web", "execID": exec_id}},
            },
        },
    }


def test_repeats_within_the_window_are_folded() -> None:
    folder = Folder(60, DEFAULT_FOLD_IGNORE)
    first = alert(exec_id="1" * 64, time_nano=10)
    assert folder.admit(first, 0.0) == (True, [])
    assert folder.admit(alert(exec_id="2" * 64, time_nano=20), 10.0) == (False, [])
    assert folder.admit(alert(exec_id="3" * 64, time_nano=30), 59.9) == (False, [])
    assert folder.folded == 2
    closed = folder.expire(60.0)
    assert len(closed) == 1
    kept, fold = closed[0]
    assert kept is first
    assert (fold.count, fold.started, fold.last) == (3, 0.0, 59.9)


def test_after_the_window_the_same_alert_starts_a_new_fold() -> None:
    folder = Folder(60, DEFAULT_FOLD_IGNORE)
    assert folder.admit(alert(), 0.0)[0] is True
    assert folder.admit(alert(), 30.0)[0] is False
    emit, closed = folder.admit(alert(), 61.0)
    assert emit is True
    assert [f.count for _, f in closed] == [2]


def test_a_single_alert_closes_without_a_summary() -> None:
    folder = Folder(60, DEFAULT_FOLD_IGNORE)
    folder.admit(alert(), 0.0)
    assert folder.expire(120.0) == []
    assert folder.admit(alert(), 121.0)[0] is True


def test_different_commands_are_not_folded_together() -> None:
    folder = Folder(60, DEFAULT_FOLD_IGNORE)
    assert folder.admit(alert("cat /etc/hostname"), 0.0)[0] is True
    assert folder.admit(alert("cat /etc/shadow"), 1.0)[0] is True
    assert folder.admit(alert("cat /etc/hostname"), 2.0)[0] is False


def test_different_agents_rules_and_descriptions_are_not_folded() -> None:
    folder = Folder(60, DEFAULT_FOLD_IGNORE)
    assert folder.admit(alert(agent="001"), 0.0)[0] is True
    assert folder.admit(alert(agent="002"), 0.0)[0] is True
    assert folder.admit(alert(rule_id="200110"), 0.0)[0] is True
    other = alert()
    other["rule"]["description"] = "Docker: Command launched in container db"
    assert folder.admit(other, 0.0)[0] is True
    other_location = alert()
    other_location["location"] = "elsewhere"
    assert folder.admit(other_location, 0.0)[0] is True


def test_ignored_fields_do_not_split_folds_but_other_fields_do() -> None:
    folder = Folder(60, DEFAULT_FOLD_IGNORE)
    base = alert()
    base["data"]["container"] = {"privileged": False, "inspected_at": 1.0}
    same = copy.deepcopy(base)
    same["data"]["docker"]["Actor"]["Attributes"]["execID"] = "f" * 64
    same["data"]["docker"]["timeNano"] = 999
    same["data"]["container"]["inspected_at"] = 2.0
    different = copy.deepcopy(base)
    different["data"]["container"]["privileged"] = True
    assert folder.admit(base, 0.0)[0] is True
    assert folder.admit(same, 1.0)[0] is False
    assert folder.admit(different, 2.0)[0] is True
    # the key never mutates the alert it was computed from
    assert same["data"]["docker"]["Actor"]["Attributes"]["execID"] == "f" * 64
    assert same["data"]["container"]["inspected_at"] == 2.0


def test_full_log_is_part_of_identity() -> None:
    folder = Folder(60, ())
    a, b = alert(), alert()
    a["full_log"], b["full_log"] = "line one", "line two"
    assert folder.admit(a, 0.0)[0] is True
    assert folder.admit(b, 0.0)[0] is True


def test_window_zero_disables_folding() -> None:
    folder = Folder(0, DEFAULT_FOLD_IGNORE)
    assert [folder.admit(alert(), float(t)) for t in range(5)] == [(True, [])] * 5
    assert folder.folded == 0
    assert folder.drain() == []


def test_drain_closes_open_folds_with_repeats() -> None:
    folder = Folder(60, DEFAULT_FOLD_IGNORE)
    folder.admit(alert("a"), 0.0)
    folder.admit(alert("a"), 1.0)
    folder.admit(alert("b"), 2.0)
    closed = folder.drain()
    assert [(first["data"]["docker"]["Action"], fold.count) for first, fold in closed] == [
        ("exec_start: a", 2)
    ]
    assert folder.drain() == []
