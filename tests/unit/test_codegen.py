"""The generated matching code (run when interpreted) and the compiled loops (run when compiled, see
vigil/compiled.py) must give what the plain generic checks give, on real and awkward events."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from vigil.agent.modules.docker import normalize
from vigil.manager.analysis.codegen import compile_candidates, compile_conditions, compile_template
from vigil.manager.analysis.fields import Fields
from vigil.manager.analysis.rule_loader import load_rules
from vigil.manager.analysis.rules import _parse_template, conditions_hold, render_template
from vigil.manager.analysis.ruleset import RuleSet, scan_candidates

from .support import (
    analyzer,
    docker_event,
    docker_obj,
    exec_event,
    inspect_json,
    read_jsonl,
    shipped_rules,
    write_rules,
)


def awkward_variants(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The same event with keys holding dots, values of other types, nulls and missing objects."""
    docker = data.get("docker", {})
    variants = []
    flat = {k: v for k, v in data.items() if k != "docker"}
    # `docker.Type` as one dotted top-level key instead of a nested object
    variants.append({**flat, **{f"docker.{k}": v for k, v in docker.items()}})
    for key, value in (("Action", None), ("Action", ["create", "start"]), ("Type", 7), ("Type", True),
                       ("Action", {"nested": "create"}), ("Action", 3.0)):
        changed = copy.deepcopy(data)
        changed.setdefault("docker", {})[key] = value
        variants.append(changed)
    variants.append({k: v for k, v in data.items() if k != "integration"})
    variants.append({"integration": ["docker", "other"], "docker": docker})
    variants.append({"integration": "docker", "docker": "not an object"})
    return variants


def shipped_events() -> list[dict[str, Any]]:
    datas: list[dict[str, Any]] = []
    for name in ("session-raw.jsonl", "one-per-action.jsonl"):
        for obj in read_jsonl(name):
            action = str(obj.get("Action", ""))
            info = normalize.exec_info(action, None)
            datas.append(docker_event(obj, {"exec": info} if info else {}).data)
    posture = normalize.posture(inspect_json(host={
        "Privileged": True, "PidMode": "host", "CapAdd": ["SYS_ADMIN"], "Binds": ["/var/run/docker.sock:/s"],
        "SecurityOpt": ["seccomp=unconfined", "apparmor:unconfined"],
    }))
    for action in ("create", "start"):
        datas.append(docker_event(docker_obj("container", action), {"container": posture}).data)
    datas.append(exec_event("busybox sh").data)
    datas.append(exec_event("apk add curl").data)
    datas.append({"vigil": {"kind": "malformed_input"}})
    awkward = [v for d in datas[:60] for v in awkward_variants(d)]
    return datas + awkward


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return shipped_events()


def test_generated_candidates_agree_with_the_generic_walk(events: list[dict[str, Any]]) -> None:
    ruleset = RuleSet(shipped_rules().rules)
    indexes = [*ruleset.root_indexes.values(), *ruleset.child_indexes.values()]
    assert len(indexes) > 10
    generated = [compile_candidates(index) for index in indexes]
    hits = merged = 0
    for data in events:
        for index, candidates in zip(indexes, generated, strict=True):
            expected = scan_candidates(index, Fields(data))
            assert candidates(Fields(data)) == expected, (data, [r.id for r in expected])
            assert index.candidates(Fields(data)) == expected  # whichever this run uses
            hits += bool(expected)
            merged += len(expected) > 1
    assert hits > len(events) and merged > 10  # the comparison is not all empty or single lists


def _plain_check(rule: Any, fields: Fields) -> bool:
    """Every condition on Fields.get, the slow path with no shortcuts."""
    return all(c.test(fields.get(c.path)) for c in rule.conditions) and (rule.raw is None or rule.raw.test(fields.raw))


def test_generated_and_compiled_conditions_agree_with_the_plain_check(events: list[dict[str, Any]]) -> None:
    rules = list(shipped_rules().rules.values())
    generated = {rule.id: compile_conditions(rule.conditions, rule.raw) for rule in rules}
    matched = 0
    for data in events:
        for rule in rules:
            expected = _plain_check(rule, Fields(data))
            assert conditions_hold(rule.conditions, rule.raw, Fields(data)) is expected, (rule.id, data)
            assert generated[rule.id](Fields(data)) is expected, (rule.id, data)
            assert rule.matches(Fields(data)) is expected, (rule.id, data)
            matched += expected
    assert matched > len(events)


def test_negated_numeric_cidr_and_exists_conditions(tmp_path: Path) -> None:
    write_rules(tmp_path, """
rules:
  - id: 1
    level: 3
    description: "all kinds"
    fields:
      user: {not: true, in: [root, admin]}
      cmd: {not: true, regex: '^sudo '}
      size: {gt: 10, le: 100}
      src.ip: {cidr: 10.0.0.0/8}
      tag: {exists: false}
""")
    rule = load_rules([tmp_path]).rules[1]
    good = {"user": "bob", "cmd": "ls", "size": 50, "src": {"ip": "10.1.2.3"}}
    for data, expected in [
        (good, True),
        ({**good, "user": "root"}, False),
        ({**good, "user": ["bob", "root"]}, False),
        ({**good, "cmd": "sudo ls"}, False),
        ({**good, "size": "11"}, True),
        ({**good, "size": 101}, False),
        ({**good, "size": True}, False),
        ({**good, "src": {"ip": "192.168.0.1"}}, False),
        ({**{k: v for k, v in good.items() if k != "src"}, "src.ip": "10.9.9.9"}, True),
        ({**good, "tag": "x"}, False),
        ({**good, "tag": None}, True),
    ]:
        assert rule.matches(Fields(data)) is expected, data
        assert conditions_hold(rule.conditions, rule.raw, Fields(data)) is expected, data


def test_rule_text_never_becomes_code(tmp_path: Path) -> None:
    """Paths and values from a rule file are data in the generated functions, whatever they contain."""
    marker = tmp_path / "pwned"
    hostile = f'a"]); open({str(marker)!r}, "w"); x = (["'
    value = "');import os;os._exit(1)#"
    # A placeholder ends at the first `)`, so the one in the description has none.
    shown = 'b"]; raise SystemExit; x = ["'
    rule_spec = {"id": 1, "level": 5, "decoded_as": "json", "description": f"got $({shown}) and $(c\n'd)",
                 "fields": {hostile: value}}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"rules": [rule_spec]}), encoding="utf-8")
    loaded = load_rules([tmp_path])
    rule = loaded.rules[1]
    data = {hostile: value, shown: "it", "c\n'd": "x"}
    assert rule.matches(Fields(data))
    assert [r.id for r in RuleSet(loaded.rules).roots("json", Fields(data))] == [1]
    assert rule.render_description(Fields(data)) == "got it and x"
    assert not marker.exists()


RENDERERS = [
    pytest.param(lambda text: compile_template(_parse_template(text)), id="generated"),
    pytest.param(lambda text: lambda fields: render_template(
        tuple((lit, path, tuple(path.split("."))) for lit, path in _parse_template(text)), fields), id="loop"),
]


@pytest.mark.parametrize("make", RENDERERS)
@pytest.mark.parametrize(("value", "text"), [
    ("web", "web"), (["a", 1, True], "a, 1, true"), (None, ""), (3.0, "3"), (2.5, "2.5"), (False, "false"),
    ({"k": "v"}, "{'k': 'v'}"),
])
def test_description_placeholders_render_every_value_type(make: Any, value: Any, text: str) -> None:
    render = make("[$(x.y)] in $(absent.field)$(x.y)")
    assert render(Fields({"x": {"y": value}})) == f"[{text}] in {text}"
    assert render(Fields({"x.y": value})) == f"[{text}] in {text}"


@pytest.mark.parametrize("make", RENDERERS)
def test_a_description_with_thousands_of_placeholders_renders(make: Any) -> None:
    assert make("$(a) " * 5000)(Fields({"a": "x"})) == "x " * 5000


@pytest.mark.parametrize("make", RENDERERS)
def test_description_without_placeholders_and_empty(make: Any) -> None:
    assert make("plain $( text")(Fields({})) == "plain $( text"
    assert make("")(Fields({})) == ""


def test_shipped_alerts_unchanged_by_compilation(events: list[dict[str, Any]]) -> None:
    """Descriptions come out as the generic rendering would write them, for every alert of the fixtures."""
    from vigil.event import AgentRef, Event

    an = analyzer()
    rendered = 0
    for data in events[:500]:
        result = an.analyse(Event("docker", "docker", 0.0, data, "json", AgentRef()))
        if result.alert is None or result.match.rule is None:
            continue
        expected = "".join(
            literal + (_generic_text(Fields(data).get(path)) if path else "")
            for literal, path in _parse_template(result.match.rule.description)
        )
        assert result.alert["rule"]["description"] == expected
        rendered += 1
    assert rendered > 100


def _generic_text(value: Any) -> str:
    from vigil.manager.analysis.fields import as_text

    if isinstance(value, list):
        return ", ".join(as_text(v) for v in value)
    return "" if value is None else as_text(value)
