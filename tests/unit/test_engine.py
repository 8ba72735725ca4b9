"""The engine: rule tree, winner selection, exceptions, correlation, the index and logtest traces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vigil.manager.analysis.engine import Engine, Match, Step
from vigil.manager.analysis.fields import Fields
from vigil.manager.analysis.rule_loader import load_rules
from vigil.manager.analysis.ruleset import RuleSet

from .support import write_rules

ROOT = """
rules:
  - id: 1
    level: 0
    decoded_as: json
    fields: {source: app}
    description: "app event"
    groups: [app]
"""


def engine_for(tmp_path: Path, text: str) -> Engine:
    write_rules(tmp_path, text)
    return Engine(RuleSet(load_rules([tmp_path]).rules))


def run(
    engine: Engine,
    data: dict[str, Any],
    ts: float = 0.0,
    decoder: str = "json",
    trace: list[Step] | None = None,
    raw: str | None = None,
) -> Match:
    return engine.match(decoder, Fields(data, raw), ts, trace)


def winner(engine: Engine, data: dict[str, Any], ts: float = 0.0, **kw: Any) -> int | None:
    match = run(engine, data, ts, **kw)
    return match.rule.id if match.rule is not None else None


# ---- the tree ----------------------------------------------------------------------------------


def test_roots_by_decoder(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        ROOT
        + """
  - id: 2
    level: 3
    decoded_as: syslog
    fields: {source: app}
    description: "syslog only"
  - id: 3
    level: 1
    fields: {source: db}
    description: "no decoded_as: a root for every decoder"
""",
    )
    assert winner(engine, {"source": "app"}) == 1
    assert winner(engine, {"source": "app"}, decoder="syslog") == 2
    assert winner(engine, {"source": "app"}, decoder="kubernetes") is None
    assert winner(engine, {"source": "db"}) == 3
    assert winner(engine, {"source": "db"}, decoder="syslog") == 3
    assert winner(engine, {"other": "app"}) is None


def test_if_sid_chain(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        ROOT
        + """
  - id: 2
    level: 3
    if_sid: 1
    fields: {action: login}
    description: login
  - id: 3
    level: 5
    if_sid: 2
    fields: {user: root}
    description: root login
""",
    )
    match = run(engine, {"source": "app", "action": "login", "user": "root"})
    assert (match.rule and match.rule.id, match.depth, match.chain) == (3, 2, [1, 2, 3])
    assert winner(engine, {"source": "app", "action": "login", "user": "bob"}) == 2
    # a child is never tried when its parent did not match
    assert winner(engine, {"source": "db", "action": "login", "user": "root"}) is None


def test_if_sid_with_several_parents(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        ROOT
        + """
  - id: 2
    level: 3
    if_sid: 1
    fields: {action: create}
    description: create
  - id: 3
    level: 3
    if_sid: 1
    fields: {action: start}
    description: start
  - id: 4
    level: 9
    if_sid: [2, 3]
    fields: {privileged: true}
    description: privileged
""",
    )
    assert winner(engine, {"source": "app", "action": "create", "privileged": True}) == 4
    assert winner(engine, {"source": "app", "action": "start", "privileged": True}) == 4
    assert winner(engine, {"source": "app", "action": "stop", "privileged": True}) == 1


def test_if_group_chain(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        ROOT
        + """
  - id: 2
    level: 3
    if_sid: 1
    fields: {action: fail}
    description: failure
    groups: [auth_failure]
  - id: 3
    level: 3
    if_sid: 1
    fields: {action: denied}
    description: denied
    groups: [auth_failure]
  - id: 4
    level: 8
    if_group: auth_failure
    fields: {user: root}
    description: root failure
""",
    )
    assert run(engine, {"source": "app", "action": "fail", "user": "root"}).chain == [1, 2, 4]
    assert run(engine, {"source": "app", "action": "denied", "user": "root"}).chain == [1, 3, 4]
    assert winner(engine, {"source": "app", "action": "fail", "user": "bob"}) == 2
    assert winner(engine, {"source": "app", "action": "ok", "user": "root"}) == 1


def test_deepest_then_highest_level_wins(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        ROOT
        + """
  - id: 2
    level: 3
    if_sid: 1
    fields: {a: 1}
    description: shallow low
  - id: 3
    level: 12
    if_sid: 1
    fields: {b: 1}
    description: shallow high
  - id: 4
    level: 2
    if_sid: 2
    fields: {c: 1}
    description: deep and quiet
  - id: 5
    level: 6
    if_sid: 1
    fields: {b: 1}
    description: shallow middle
""",
    )
    # depth first: the level-2 grandchild beats the level-12 child
    assert winner(engine, {"source": "app", "a": 1, "b": 1, "c": 1}) == 4
    # same depth: the highest level
    assert winner(engine, {"source": "app", "a": 1, "b": 1}) == 3
    assert winner(engine, {"source": "app", "a": 1}) == 2


def test_equal_depth_and_level_first_rule_in_file_order_wins(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        ROOT
        + """
  - id: 20
    level: 5
    if_sid: 1
    fields: {a: 1}
    description: first
  - id: 10
    level: 5
    if_sid: 1
    fields: {b: 1}
    description: second
""",
    )
    assert winner(engine, {"source": "app", "a": 1, "b": 1}) == 20


def test_level_zero_child_silences(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        ROOT
        + """
  - id: 2
    level: 7
    if_sid: 1
    fields: {action: exec}
    description: exec
  - id: 3
    level: 0
    if_sid: 2
    fields: {user: backup}
    description: the nightly backup job, not interesting
""",
    )
    match = run(engine, {"source": "app", "action": "exec", "user": "backup"})
    assert match.rule is not None and (match.rule.id, match.rule.level) == (3, 0)
    assert winner(engine, {"source": "app", "action": "exec", "user": "eve"}) == 2


def test_raw_line_condition(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        ROOT
        + """
  - id: 2
    level: 5
    if_sid: 1
    raw: {regex: 'Failed password'}
    description: raw
""",
    )
    assert winner(engine, {"source": "app"}, raw="sshd: Failed password for root") == 2
    assert winner(engine, {"source": "app"}, raw="sshd: Accepted password for root") == 1
    assert winner(engine, {"source": "app"}) == 1


# ---- exceptions --------------------------------------------------------------------------------

EXCEPTIONS = (
    ROOT
    + """
  - id: 2
    level: 7
    if_sid: 1
    fields: {action: exec}
    description: exec
    exceptions:
      - name: healthcheck
        fields: {healthcheck: true}
      - name: ci-runner
        fields: {user: ci, host: {regex: '^runner-'}}
      - name: raw-marker
        raw: {regex: 'vigil-ignore'}
  - id: 3
    level: 9
    if_sid: 2
    fields: {user: root}
    description: root exec
"""
)


def test_exception_suppresses_and_counts_by_name(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, EXCEPTIONS)
    assert winner(engine, {"source": "app", "action": "exec", "healthcheck": True}) == 1
    assert winner(engine, {"source": "app", "action": "exec", "healthcheck": True}) == 1
    assert winner(engine, {"source": "app", "action": "exec", "user": "ci", "host": "runner-7"}) == 1
    assert winner(engine, {"source": "app", "action": "exec"}, raw="x vigil-ignore") == 1
    assert engine.suppressed == {(2, "healthcheck"): 2, (2, "ci-runner"): 1, (2, "raw-marker"): 1}


def test_exception_suppresses_the_subtree(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, EXCEPTIONS)
    assert winner(engine, {"source": "app", "action": "exec", "user": "root", "healthcheck": True}) == 1


def test_exception_near_misses_still_alert(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, EXCEPTIONS)
    assert winner(engine, {"source": "app", "action": "exec", "healthcheck": False}) == 2
    # every condition of an exception must hold
    assert winner(engine, {"source": "app", "action": "exec", "user": "ci", "host": "laptop"}) == 2
    assert winner(engine, {"source": "app", "action": "exec", "user": "root"}) == 3
    assert engine.suppressed == {}


# ---- frequency / timeframe ---------------------------------------------------------------------

FREQUENCY = (
    ROOT
    + """
  - id: 2
    level: 3
    if_sid: 1
    fields: {action: fail}
    description: failure
  - id: 3
    level: 10
    if_sid: 2
    frequency: 3
    timeframe: 60
    same_fields: [user]
    description: "3 failures for $(user) in 60 s"
"""
)


def fail(user: str = "bob", **extra: Any) -> dict[str, Any]:
    return {"source": "app", "action": "fail", "user": user, **extra}


def test_frequency_fires_on_the_nth_within_the_window(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, FREQUENCY)
    assert [winner(engine, fail(), ts) for ts in (0, 10, 20)] == [2, 2, 3]
    match = run(engine, fail(), 21)
    # the window restarts after firing
    assert match.rule is not None and match.rule.id == 2


def test_frequency_reports_the_count(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, FREQUENCY)
    run(engine, fail(), 0)
    run(engine, fail(), 1)
    match = run(engine, fail(), 2)
    assert (match.rule and match.rule.id, match.correlated, match.chain) == (3, 3, [1, 2, 3])


def test_frequency_does_not_fire_when_spread_out(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, FREQUENCY)
    assert [winner(engine, fail(), ts) for ts in (0, 40, 80, 130, 200)] == [2, 2, 2, 2, 2]


def test_frequency_window_slides(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, FREQUENCY)
    # at 80 the event of 0 has left the window; at 90 three remain (40, 80, 90)
    assert [winner(engine, fail(), ts) for ts in (0, 40, 80, 90)] == [2, 2, 2, 3]


def test_window_includes_its_edge(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, FREQUENCY)
    assert [winner(engine, fail(), ts) for ts in (0, 30, 60)] == [2, 2, 3]


def test_same_fields_keep_keys_apart(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, FREQUENCY)
    users = ["alice", "bob", "alice", "bob", "carol", "alice"]
    assert [winner(engine, fail(u), i) for i, u in enumerate(users)] == [2, 2, 2, 2, 2, 3]


def test_events_without_the_same_field_share_one_key(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, FREQUENCY)
    events = [{"source": "app", "action": "fail"}] * 3
    assert [winner(engine, e, i) for i, e in enumerate(events)] == [2, 2, 3]


def test_frequency_without_same_fields_counts_everything(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, FREQUENCY.replace("    same_fields: [user]\n", ""))
    assert [winner(engine, fail(u), i) for i, u in enumerate(["a", "b", "c"])] == [2, 2, 3]


def test_list_valued_field_with_one_key_hit(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        ROOT
        + """
  - id: 2
    level: 10
    if_sid: 1
    fields: {tags: {in: [a, b]}}
    description: tagged
""",
    )
    assert winner(engine, {"source": "app", "tags": ["x", "b"]}) == 2
    assert winner(engine, {"source": "app", "tags": ["x", "y"]}) == 1


def test_list_valued_key_is_counted_once_per_event(tmp_path: Path) -> None:
    # both elements of `tags` hit the key of rule 2: the index must still try it once per event
    engine = engine_for(
        tmp_path,
        ROOT
        + """
  - id: 2
    level: 10
    if_sid: 1
    fields: {tags: {in: [a, b]}}
    frequency: 3
    timeframe: 60
    description: burst
""",
    )
    data = {"source": "app", "tags": ["a", "b"]}
    assert [winner(engine, data, ts) for ts in (0, 1, 2)] == [1, 1, 2]


MATCHED = (
    ROOT
    + """
  - id: 2
    level: 5
    if_sid: 1
    fields: {action: shell}
    description: shell
    groups: [shell]
  - id: 3
    level: 5
    if_sid: 1
    fields: {action: su}
    description: su
    groups: [shell, privilege]
  - id: 10
    level: 11
    if_matched_sid: 2
    frequency: 3
    timeframe: 120
    same_fields: [container]
    description: "3 shells in $(container)"
  - id: 11
    level: 12
    if_matched_group: privilege
    frequency: 2
    timeframe: 60
    description: "2 su"
"""
)


def ev(action: str, container: str = "c1") -> dict[str, Any]:
    return {"source": "app", "action": action, "container": container}


def test_if_matched_sid(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, MATCHED)
    assert [winner(engine, ev("shell"), ts) for ts in (0, 1, 2)] == [2, 2, 10]
    match = run(engine, ev("shell"), 3)
    assert match.rule is not None and match.rule.id == 2
    engine = engine_for(tmp_path, MATCHED)
    assert [winner(engine, ev("shell"), ts) for ts in (0, 1)] == [2, 2]
    match = run(engine, ev("shell"), 2)
    assert (match.rule and match.rule.id, match.correlated, match.chain, match.depth) == (
        10,
        3,
        [1, 2, 10],
        2,
    )


def test_if_matched_sid_respects_same_fields_and_window(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, MATCHED)
    seq = [(0, "c1"), (1, "c2"), (2, "c1"), (3, "c2"), (4, "c2")]
    assert [winner(engine, ev("shell", c), ts) for ts, c in seq] == [2, 2, 2, 2, 10]
    engine = engine_for(tmp_path, MATCHED)
    assert [winner(engine, ev("shell"), ts) for ts in (0, 1, 200, 260)] == [2, 2, 2, 2]


def test_if_matched_sid_ignores_other_rules(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, MATCHED)
    assert [winner(engine, ev(a), ts) for ts, a in enumerate(["shell", "login", "shell", "other"])] == [
        2,
        1,
        2,
        1,
    ]


def test_if_matched_group(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, MATCHED)
    # rule 2 is in group shell but not privilege; only su (rule 3) counts for rule 11
    assert [winner(engine, ev(a), ts) for ts, a in enumerate(["shell", "su", "shell", "su"])] == [2, 3, 2, 11]


# ---- the index ---------------------------------------------------------------------------------


def test_regex_keyed_rules_match_through_the_set(tmp_path: Path) -> None:
    siblings = "".join(
        f"""
  - id: {100 + i}
    level: {3 + i % 5}
    if_sid: 1
    fields: {{cmd: {{regex: '\\btool{i}\\b'}}}}
    description: "tool {i}"
"""
        for i in range(200)
    )
    engine = engine_for(
        tmp_path,
        ROOT
        + siblings
        + """
  - id: 400
    level: 3
    if_sid: 1
    fields: {cmd: {regex: '(?i)^CURL '}}
    description: curl, any case
  - id: 401
    level: 3
    if_sid: 1
    fields: {cmd: {regex: 'wget'}, user: root}
    description: "two conditions: the regex key and user"
""",
    )
    trace: list[Step] = []
    assert winner(engine, {"source": "app", "cmd": "run tool137 now"}, trace=trace) == 237
    # only the rules whose key can hold were tried: the root and tool137 (not tool13 or tool1)
    assert [(s.rule_id, s.outcome) for s in trace] == [(1, "matched"), (237, "matched")]
    assert winner(engine, {"source": "app", "cmd": "curl -s x"}) == 400
    assert winner(engine, {"source": "app", "cmd": "tool1 tool13"}) == 113
    assert winner(engine, {"source": "app", "cmd": "wget x", "user": "bob"}) == 1
    assert winner(engine, {"source": "app", "cmd": "wget x", "user": "root"}) == 401
    assert winner(engine, {"source": "app", "cmd": ["ls", "tool42"]}) == 142
    assert winner(engine, {"source": "app", "cmd": "nothing"}) == 1


def test_equals_keyed_siblings_and_unkeyed_rules(tmp_path: Path) -> None:
    siblings = "".join(
        f"""
  - id: {100 + i}
    level: 3
    if_sid: 1
    fields: {{action: act{i}}}
    description: "action {i}"
"""
        for i in range(300)
    )
    engine = engine_for(
        tmp_path,
        ROOT
        + siblings
        + """
  - id: 500
    level: 3
    if_sid: 1
    fields: {size: {gt: 100}}
    description: big, no key condition, always tried
  - id: 501
    level: 3
    if_sid: 1
    fields: {action: {equals: act7, not: true}, user: {in: [root, admin]}}
    description: negated conditions are not keys; user is
""",
    )
    trace: list[Step] = []
    assert winner(engine, {"source": "app", "action": "act250"}, trace=trace) == 350
    assert [s.rule_id for s in trace] == [1, 350, 500]
    assert winner(engine, {"source": "app", "action": "nope", "size": 500}) == 500
    assert winner(engine, {"source": "app", "action": "nope", "user": "admin"}) == 501
    assert winner(engine, {"source": "app", "action": "act7", "user": "admin"}) == 107


# ---- traces for logtest ------------------------------------------------------------------------


def test_trace_steps(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        FREQUENCY
        + """
  - id: 4
    level: 5
    if_sid: 1
    fields: {action: {regex: '^fa'}}
    description: starts with fa
    exceptions:
      - name: known
        fields: {user: svc}
  - id: 5
    level: 5
    if_sid: 2
    fields: {user: {regex: '^adm'}}
    description: admin
""",
    )
    trace: list[Step] = []
    run(engine, fail("svc"), 0, trace=trace)
    assert trace == [
        Step(1, 0, "matched"),
        Step(2, 1, "matched"),
        Step(3, 2, "counted 1/3 in 60 s"),
        Step(4, 1, "suppressed by exception 'known'"),
    ]
    trace = []
    run(engine, fail("administrator"), 1, trace=trace)
    assert Step(5, 2, "matched") in trace
    trace = []
    run(engine, {"source": "app", "action": "fail", "user": "bob"}, 2, trace=trace)
    assert Step(4, 1, "matched") in trace


def test_trace_shows_a_candidate_that_did_not_match(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        ROOT
        + """
  - id: 2
    level: 3
    if_sid: 1
    fields: {action: login, user: root}
    description: root login
""",
    )
    trace: list[Step] = []
    assert winner(engine, {"source": "app", "action": "login", "user": "bob"}, trace=trace) == 1
    assert trace == [Step(1, 0, "matched"), Step(2, 1, "no match")]


def test_trace_of_correlation(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, MATCHED)
    trace: list[Step] = []
    run(engine, ev("shell"), 0, trace=trace)
    assert trace[-1] == Step(10, 2, "counted 1/3 in 120 s")


def test_counters(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, FREQUENCY)
    for ts in range(3):
        run(engine, fail(), ts)
    run(engine, {"source": "db"}, 4)
    assert engine.matched_by_rule == {2: 2, 3: 1}


# ---- known engine bugs -------------------------------------------------------------------------

IF_GROUP_LOOP = (
    ROOT
    + """
  - id: 2
    level: 3
    if_group: app
    fields: {a: 1}
    description: two
    groups: [app, extra]
  - id: 3
    level: 3
    if_group: app
    fields: {b: 1}
    description: three
    groups: [app]
"""
)


def test_if_group_rules_in_their_own_group_do_not_loop(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, IF_GROUP_LOOP)
    assert winner(engine, {"source": "app", "a": 1, "b": 1}) in (2, 3)


def test_frequency_rule_under_if_group_counts_each_event_once(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        ROOT
        + """
  - id: 2
    level: 3
    if_sid: 1
    fields: {action: fail}
    description: failure
    groups: [app]
  - id: 3
    level: 10
    if_group: app
    frequency: 3
    timeframe: 60
    fields: {user: root}
    description: 3 events for root
""",
    )
    data = {"source": "app", "action": "fail", "user": "root"}
    assert [winner(engine, data, ts) for ts in (0, 1, 2)] == [2, 2, 3]


def test_a_rule_that_cannot_outrank_the_match_found_is_skipped(tmp_path: Path) -> None:
    """A leaf no deeper and no higher than the match already found cannot win; skipping it (as the
    engine does when not tracing) gives the winner a full walk (with a trace) gives."""
    engine = engine_for(tmp_path, """
rules:
  - {id: 1, level: 0, decoded_as: json, description: "root", fields: {app: web}}
  - {id: 2, level: 9, if_sid: 1, description: "high", fields: {status: "500"}}
  - {id: 3, level: 4, if_sid: 1, description: "low", fields: {status: {regex: '^5'}}}
  - {id: 4, level: 9, if_sid: 1, description: "as high, later", fields: {path: /x}}
  - {id: 5, level: 12, if_sid: 1, description: "higher", fields: {path: /admin}}
""")
    assert engine.ruleset.outranked_skippable >= {engine.ruleset.rules[i] for i in (2, 3, 4, 5)}
    for data, winner in [({"app": "web", "status": "500", "path": "/x"}, 2),
                         ({"app": "web", "status": "503", "path": "/x"}, 4),
                         ({"app": "web", "status": "500", "path": "/admin"}, 5),
                         ({"app": "web", "status": "503"}, 3)]:
        trace: list[Step] = []
        walked = engine.match("json", Fields(data), 0.0, trace)
        skipped = engine.match("json", Fields(data), 0.0)
        assert walked.rule is not None and skipped.rule is walked.rule and walked.rule.id == winner
        assert skipped.chain == walked.chain == [1, winner]


def test_skipping_never_changes_the_winner_on_the_shipped_rules() -> None:
    """Docker events and every captured Kubernetes audit event, with and without the skipping."""
    from vigil.agent.modules.kubernetes.audit_normalize import audit_event
    from vigil.agent.modules.kubernetes.audit_payload import AuditPayloadError, parse_payload

    from .support import analyzer
    from .test_codegen import shipped_events

    events = shipped_events()
    traces = Path(__file__).resolve().parents[2].parent / "shared/fixtures/k8s-audit/falco-traces"
    for path in sorted(traces.glob("*.json")):
        for line in path.read_bytes().splitlines():
            try:
                batch = parse_payload(line, max_events=10_000, max_event_bytes=1 << 20)
            except AuditPayloadError:
                continue
            events += [audit_event(obj, module="k", source="file", cluster="c", location="l").data
                       for obj in batch.events]
    assert sum("k8s" in data for data in events) > 40
    plain, traced = analyzer().engine, analyzer().engine
    for data in events:
        quick = plain.match("json", Fields(data), 0.0)
        full = traced.match("json", Fields(data), 0.0, [])
        assert (quick.rule and quick.rule.id, quick.chain) == (full.rule and full.rule.id, full.chain), data
