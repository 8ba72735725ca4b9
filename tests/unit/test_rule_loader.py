"""Rule files: what loads, and for each mistake, the file, the line and the words a rule writer sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.errors import Problem, RuleLoadError
from vigil.manager.analysis.fields import Fields
from vigil.manager.analysis.rule_loader import load_rules, shipped_rules_dir

from .support import line_of_text, write_rules

BASE = """
rules:
  - id: 100
    level: 0
    decoded_as: json
    fields: {integration: docker}
    description: "base"
    groups: [docker]
"""


def problems_of(*dirs: Path) -> list[Problem]:
    with pytest.raises(RuleLoadError) as info:
        load_rules(list(dirs))
    return info.value.problems


def only_problem(*dirs: Path) -> Problem:
    problems = problems_of(*dirs)
    assert len(problems) == 1, problems
    return problems[0]


# ---- what loads --------------------------------------------------------------------------------


def test_valid_file_loads_with_every_key(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        BASE
        + """
  - id: 101
    level: 7
    if_sid: 100
    fields:
      docker.Action: {regex: '^exec_start: '}
      exec.program: {list: shells}
      docker.Actor.Attributes.name: {equals: db, not: true}
    raw: {regex: passwd}
    description: "Shell in $(docker.Actor.Attributes.name): $(exec.command)"
    groups: [docker, shell]
    mitre: [T1059.004]
    pci_dss: [10.2.7]
    gdpr: [IV_32.2]
    hipaa: [164.312.b]
    nist_800_53: [AU.14]
    tsc: [CC7.2]
    options: [no_full_log, no_fold]
    exceptions:
      - name: ops-team
        fields: {docker.Actor.Attributes.name: ops}
    info: "free text for people"
  - id: 102
    level: 10
    if_matched_sid: 101
    frequency: 3
    timeframe: 60
    same_fields: [docker.Actor.ID]
    description: "Many shells"
lists:
  shells: [sh, bash]
""",
    )
    loaded = load_rules([tmp_path])
    assert sorted(loaded.rules) == [100, 101, 102]
    assert loaded.files == [str(path)]
    assert loaded.lists["shells"] == frozenset({"sh", "bash"})
    rule = loaded.rules[101]
    assert (rule.level, rule.if_sid, rule.groups, rule.mitre) == (
        7,
        (100,),
        ("docker", "shell"),
        ("T1059.004",),
    )
    assert rule.compliance == {
        "pci_dss": ("10.2.7",),
        "gdpr": ("IV_32.2",),
        "hipaa": ("164.312.b",),
        "nist_800_53": ("AU.14",),
        "tsc": ("CC7.2",),
    }
    assert rule.options == frozenset({"no_full_log", "no_fold"})
    assert rule.file == str(path)
    assert rule.line == line_of_text(path, "id: 101")
    assert [e.name for e in rule.exceptions] == ["ops-team"]
    fields = Fields(
        {
            "docker": {"Action": "exec_start: bash", "Actor": {"Attributes": {"name": "web"}}},
            "exec": {"program": "bash", "command": "bash"},
        },
        raw="cat /etc/passwd",
    )
    assert rule.matches(fields)
    assert rule.render_description(fields) == "Shell in web: bash"
    corr = loaded.rules[102]
    assert (corr.frequency, corr.timeframe, corr.same_fields, corr.if_matched_sid) == (
        3,
        60.0,
        ("docker.Actor.ID",),
        101,
    )


def test_empty_and_comment_only_files_load(tmp_path: Path) -> None:
    write_rules(tmp_path, "# nothing yet\n", "a.yml")
    write_rules(tmp_path, "", "b.yaml")
    assert load_rules([tmp_path]).rules == {}


def test_missing_user_directory_is_not_an_error(tmp_path: Path) -> None:
    loaded = load_rules([shipped_rules_dir(), tmp_path / "no-such-dir"])
    assert 87901 in loaded.rules


def test_other_files_in_the_directory_are_ignored(tmp_path: Path) -> None:
    write_rules(tmp_path, "this: is: not: yaml: [", "notes.txt")
    write_rules(tmp_path, BASE, "rules.yml")
    assert list(load_rules([tmp_path]).rules) == [100]


def test_shipped_rules_load() -> None:
    loaded = load_rules([shipped_rules_dir()])
    assert {87900, 87901, 87907, 87958, 200100, 200140, 200001} <= set(loaded.rules)
    assert all(0 <= r.level <= 16 and r.description for r in loaded.rules.values())


# ---- each mistake: file, line, message ---------------------------------------------------------


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        """
rules:
  - id: 1
    level: 3
    description: Docker: broken
""",
    )
    problem = only_problem(tmp_path)
    assert problem.file == str(path)
    assert problem.line == 4
    assert "YAML syntax" in problem.message
    assert "mapping values are not allowed" in problem.message


def test_key_written_twice(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        """
rules:
  - id: 1
    level: 3
    level: 4
    description: twice
""",
    )
    problem = only_problem(tmp_path)
    assert (problem.file, problem.line) == (str(path), 4)
    assert "'level' appears twice" in problem.message


def test_tab_indentation(tmp_path: Path) -> None:
    path = write_rules(tmp_path, "rules:\n  - id: 1\n\tlevel: 3\n")
    problem = only_problem(tmp_path)
    assert (problem.file, problem.line) == (str(path), 3)
    assert "'\\t'" in problem.message


def test_unknown_rule_key_typo(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        BASE
        + """
  - id: 101
    if_sid: 100
    levle: 3
    description: typo
""",
    )
    problems = problems_of(tmp_path)
    typo = [p for p in problems if "levle" in p.message]
    assert len(typo) == 1
    assert typo[0].file == str(path)
    assert typo[0].line == line_of_text(path, "levle:")
    assert "unknown rule key 'levle'" in typo[0].message
    # ... and the level it was meant to set is reported missing, at the rule's first line
    missing = [p for p in problems if "'level' must be 0..16" in p.message]
    assert [(p.line, "got None" in p.message) for p in missing] == [(line_of_text(path, "id: 101"), True)]


def test_bad_regex(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        BASE
        + """
  - id: 101
    level: 3
    if_sid: 100
    fields: {docker.Action: {regex: '^exec_start: (bash'}}
    description: bad regex
""",
    )
    problem = only_problem(tmp_path)
    assert problem.file == str(path)
    assert problem.line == line_of_text(path, "(bash")
    assert "rule 101" in problem.message
    assert "bad regex '^exec_start: (bash'" in problem.message
    assert "missing )" in problem.message


def test_bad_regex_in_block_fields_names_the_fields_line(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        BASE
        + """
  - id: 101
    level: 3
    if_sid: 100
    fields:
      docker.Type: container
      docker.Actor.Attributes.name: web
      docker.Action: {regex: '^exec_start: (bash'}
    description: bad regex
""",
    )
    problem = only_problem(tmp_path)
    assert problem.line == line_of_text(path, "(bash")


def test_bad_cidr(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        BASE
        + """
  - id: 101
    level: 3
    if_sid: 100
    fields: {srcip: {cidr: 10.0.0.0/40}}
    description: bad cidr
""",
    )
    problem = only_problem(tmp_path)
    assert (problem.file, problem.line) == (str(path), line_of_text(path, "10.0.0.0/40"))
    assert "srcip: bad CIDR" in problem.message


def test_unknown_operator(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        BASE
        + """
  - id: 101
    level: 3
    if_sid: 100
    fields: {docker.Action: {match: create}}
    description: bad operator
""",
    )
    problem = only_problem(tmp_path)
    assert problem.line == line_of_text(path, "match: create")
    assert "unknown operator 'match'" in problem.message


def test_if_sid_to_unknown_id(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        BASE
        + """
  - id: 101
    level: 3
    if_sid: 8790
    description: dangling parent
""",
    )
    problem = only_problem(tmp_path)
    assert (problem.file, problem.line) == (str(path), line_of_text(path, "id: 101"))
    assert "rule 101: if_sid 8790 names no rule" in problem.message


def test_if_group_to_unknown_group(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        BASE
        + """
  - id: 101
    level: 3
    if_group: dokcer
    description: dangling group
""",
    )
    problem = only_problem(tmp_path)
    assert (problem.file, problem.line) == (str(path), line_of_text(path, "id: 101"))
    assert "if_group 'dokcer' names no group" in problem.message


def test_duplicate_id_without_overwrite(tmp_path: Path) -> None:
    first = write_rules(tmp_path, BASE, "a.yml")
    second = write_rules(
        tmp_path,
        """
rules:
  - id: 100
    level: 5
    decoded_as: json
    description: "same id"
""",
        "b.yml",
    )
    problem = only_problem(tmp_path)
    assert (problem.file, problem.line) == (str(second), 2)
    assert f"rule id 100 is already defined at {first}:{line_of_text(first, 'id: 100')}" in problem.message
    assert "overwrite: true" in problem.message


def test_duplicate_id_in_the_same_file(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        BASE
        + """
  - id: 100
    level: 3
    decoded_as: json
    description: again
""",
    )
    problem = only_problem(tmp_path)
    assert (problem.file, problem.line) == (str(path), 9)
    assert "rule id 100 is already defined" in problem.message


@pytest.mark.parametrize("level", [17, -1, "high", 3.5, True])
def test_level_out_of_range(tmp_path: Path, level: object) -> None:
    path = write_rules(
        tmp_path,
        BASE
        + f"""
  - id: 101
    if_sid: 100
    description: too loud
    level: {str(level).lower() if isinstance(level, bool) else level}
""",
    )
    problem = only_problem(tmp_path)
    assert (problem.file, problem.line) == (str(path), line_of_text(path, "level: " + str(level).lower()))
    assert "rule 101: 'level' must be 0..16" in problem.message


def test_missing_description(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        BASE
        + """
  - id: 101
    level: 3
    if_sid: 100
""",
    )
    problem = only_problem(tmp_path)
    assert (problem.file, problem.line) == (str(path), line_of_text(path, "id: 101"))
    assert "rule 101: 'description' is required text" in problem.message


@pytest.mark.parametrize("value", ["0", "1000000", "'87901'"])
def test_bad_id(tmp_path: Path, value: str) -> None:
    path = write_rules(
        tmp_path,
        f"""
rules:
  - level: 3
    decoded_as: json
    description: x
    id: {value}
""",
    )
    problem = only_problem(tmp_path)
    assert (problem.file, problem.line) == (str(path), 5)
    assert "'id' must be a whole number from 1 to 999999" in problem.message


def test_cycle_in_if_sid(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        BASE
        + """
  - id: 101
    level: 3
    if_sid: [100, 103]
    description: a
  - id: 102
    level: 3
    if_sid: 101
    description: b
  - id: 103
    level: 3
    if_sid: 102
    description: c
""",
    )
    problems = problems_of(tmp_path)
    assert {(p.file, p.line) for p in problems} == {
        (str(path), line_of_text(path, f"id: {rid}")) for rid in (101, 102, 103)
    }
    assert all("if_sid chain leads back to itself" in p.message for p in problems)


def test_rule_that_is_its_own_parent(tmp_path: Path) -> None:
    write_rules(
        tmp_path,
        BASE
        + """
  - id: 101
    level: 3
    if_sid: 101
    description: self
""",
    )
    assert "rule 101: its if_sid chain leads back to itself" in only_problem(tmp_path).message


def test_unknown_list_name(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        BASE
        + """
  - id: 101
    level: 3
    if_sid: 100
    fields: {exec.program: {list: shels}}
    description: typo in list name
lists:
  shells: [sh, bash]
""",
    )
    problem = only_problem(tmp_path)
    assert (problem.file, problem.line) == (str(path), line_of_text(path, "list: shels"))
    assert "no list named 'shels' (lists: shells)" in problem.message


def test_list_from_another_file_is_usable(tmp_path: Path) -> None:
    write_rules(
        tmp_path,
        BASE
        + """
  - id: 101
    level: 3
    if_sid: 100
    fields: {exec.program: {list: shells}}
    description: uses the list of b.yml
""",
        "a.yml",
    )
    write_rules(tmp_path, "lists:\n  shells: [sh, bash]\n", "b.yml")
    rule = load_rules([tmp_path]).rules[101]
    assert rule.matches(Fields({"exec": {"program": "bash"}}))


def test_frequency_without_timeframe(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        BASE
        + """
  - id: 101
    level: 3
    if_sid: 100
    frequency: 5
    description: burst
""",
    )
    problem = only_problem(tmp_path)
    assert (problem.file, problem.line) == (str(path), line_of_text(path, "frequency: 5"))
    assert "'frequency' needs a 'timeframe'" in problem.message


@pytest.mark.parametrize(
    ("extra", "needle", "words"),
    [
        ("timeframe: 60", "timeframe: 60", "'timeframe' needs a 'frequency'"),
        ("frequency: 1\n    timeframe: 60", "frequency: 1", "at least 2"),
        ("frequency: 3\n    timeframe: 0", "timeframe: 0", "positive number of seconds"),
        ("if_matched_sid: 100", "if_matched_sid", "'if_matched_sid' needs a 'timeframe'"),
        ("options: [no_ful_log]", "options:", "unknown option 'no_ful_log'"),
        ("exceptions: [{fields: {a: b}}]", "exceptions:", "needs a 'name'"),
        ("exceptions: [{name: x, field: {a: b}}]", "exceptions:", "needs a 'name' and 'fields'"),
        ("fields: [docker.Action, create]", "fields: [", "must map field paths to conditions"),
    ],
)
def test_other_mistakes(tmp_path: Path, extra: str, needle: str, words: str) -> None:
    path = write_rules(
        tmp_path,
        BASE
        + f"""
  - id: 101
    level: 3
    if_sid: 100
    description: x
    {extra}
""",
    )
    problem = only_problem(tmp_path)
    assert (problem.file, problem.line) == (str(path), line_of_text(path, needle))
    assert words in problem.message


def test_a_rule_that_follows_another_needs_a_parent(tmp_path: Path) -> None:
    path = write_rules(tmp_path, BASE + """
  - id: 101
    level: 3
    if_matched_group: docker
    timeframe: 60
    description: x
""")
    problem = only_problem(tmp_path)
    assert (problem.file, problem.line) == (str(path), line_of_text(path, "if_matched_group"))
    assert "either 'frequency'" in problem.message and "'if_sid'/'if_group' parent" in problem.message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write_rules(tmp_path, BASE + "rule:\n  - id: 5\n")
    problem = only_problem(tmp_path)
    assert (problem.file, problem.line) == (str(path), line_of_text(path, "rule:"))
    assert "unknown top-level key 'rule'" in problem.message


def test_a_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = write_rules(tmp_path, "- id: 1\n  level: 3\n")
    problem = only_problem(tmp_path)
    assert (problem.file, problem.line) == (str(path), 1)
    assert "mapping with 'rules:'" in problem.message


def test_every_problem_is_reported_across_files_and_nothing_loads(tmp_path: Path) -> None:
    good = write_rules(tmp_path, BASE, "10-good.yml")
    broken = write_rules(tmp_path, "rules:\n  - id: 200\n    description: 'unterminated\n", "20-broken.yml")
    bad = write_rules(
        tmp_path,
        """
rules:
  - id: 300
    level: 40
    if_sid: 100
    description: too loud
  - id: 301
    level: 3
    if_sid: 100
    fields: {docker.Action: {regex: '(x'}}
    description: bad regex
  - id: 302
    level: 3
    if_sid: 999
    description: dangling
""",
        "30-bad.yml",
    )
    problems = problems_of(tmp_path)
    assert str(good) not in {p.file for p in problems}
    by_file = {(p.file, p.line) for p in problems}
    assert [p.message.startswith("YAML syntax") for p in problems if p.file == str(broken)] == [True]
    assert (str(bad), line_of_text(bad, "level: 40")) in by_file
    assert (str(bad), line_of_text(bad, "(x")) in by_file
    assert (str(bad), line_of_text(bad, "id: 302")) in by_file
    assert len(problems) == 4
    with pytest.raises(RuleLoadError) as info:
        load_rules([tmp_path])
    text = str(info.value)
    assert text.startswith("rules: 4 problem(s)")
    assert f"{bad}:{line_of_text(bad, 'level: 40')}: rule 300: 'level' must be 0..16, got 40" in text


# ---- user overrides ----------------------------------------------------------------------------


def test_user_rule_overrides_a_shipped_rule_with_overwrite(tmp_path: Path) -> None:
    user = write_rules(
        tmp_path,
        """
rules:
  - id: 87901
    overwrite: true
    level: 9
    if_sid: 87900
    fields: {docker.Type: container, docker.Action: create}
    description: "Docker: new container $(docker.Actor.Attributes.name) (site policy)"
    groups: [docker, site]
""",
    )
    loaded = load_rules([shipped_rules_dir(), tmp_path])
    rule = loaded.rules[87901]
    assert (rule.level, rule.file, rule.groups) == (9, str(user), ("docker", "site"))
    assert rule.description == "Docker: new container $(docker.Actor.Attributes.name) (site policy)"
    # shipped children of the replaced rule still hang under its id
    assert 87901 in loaded.rules[200100].if_sid
    assert len(loaded.rules) == len(load_rules([shipped_rules_dir()]).rules)


def test_user_rule_with_a_shipped_id_but_no_overwrite_is_refused(tmp_path: Path) -> None:
    user = write_rules(
        tmp_path,
        """
rules:
  - id: 87901
    level: 9
    if_sid: 87900
    description: "mine"
""",
    )
    problem = only_problem(shipped_rules_dir(), tmp_path)
    assert (problem.file, problem.line) == (str(user), 2)
    assert "rule id 87901 is already defined at " in problem.message
    assert "0560-docker.yml" in problem.message


def test_user_rule_can_chain_to_shipped_rules_and_lists(tmp_path: Path) -> None:
    write_rules(
        tmp_path,
        """
rules:
  - id: 300001
    level: 12
    if_sid: 87907
    fields: {exec.program: {list: docker_shells}, docker.Actor.Attributes.name: payments}
    description: "Shell in the payments container"
""",
    )
    loaded = load_rules([shipped_rules_dir(), tmp_path])
    assert loaded.rules[300001].if_sid == (87907,)


def test_unclosed_quote_points_at_the_quote(tmp_path: Path) -> None:
    write_rules(
        tmp_path,
        """
rules:
  - id: 1
    level: 3
    description: "Docker: container created
  - id: 2
    level: 3
    description: other
""",
    )
    problem = only_problem(tmp_path)
    assert "quoted scalar" in problem.message
    assert problem.line == 4 or "line 4" in problem.message
