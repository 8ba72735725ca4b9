"""Conditions on one field: every operator, list-any semantics, negation and the errors a rule writer sees."""

from __future__ import annotations

from typing import Any

import pytest

from vigil.manager.analysis.conditions import ConditionError, build_condition

LISTS = {"shells": frozenset({"sh", "bash", "ash"})}


def holds(spec: Any, value: Any) -> bool:
    return build_condition("f", spec, LISTS).test(value)


# ---- equals ------------------------------------------------------------------------------------


def test_bare_scalar_means_equals() -> None:
    assert holds("create", "create")
    assert not holds("create", "created")
    assert not holds("create", "CREATE")


def test_equals_compares_as_text() -> None:
    assert holds({"equals": 5}, 5)
    assert holds({"equals": 5}, "5")
    assert holds({"equals": "5"}, 5.0)
    assert not holds({"equals": 5}, 6)


def test_booleans_compare_as_true_false() -> None:
    assert holds(True, True)
    assert holds(True, "true")
    assert not holds(True, False)
    assert not holds(True, 1)
    assert holds(False, False)
    assert holds({"equals": "false"}, False)


def test_list_field_matches_when_any_element_matches() -> None:
    assert holds("pid", ["network", "pid"])
    assert not holds("pid", ["network", "ipc"])
    assert not holds("pid", [])


def test_a_list_value_in_a_rule_needs_in() -> None:
    with pytest.raises(ConditionError, match=r"in: \[\.\.\.\]"):
        build_condition("f", ["a", "b"], LISTS)


# ---- in / list ---------------------------------------------------------------------------------


def test_in() -> None:
    assert holds({"in": ["kill", "die"]}, "die")
    assert not holds({"in": ["kill", "die"]}, "stop")
    assert holds({"in": ["kill", "die"]}, ["stop", "kill"])


def test_in_needs_a_non_empty_list() -> None:
    with pytest.raises(ConditionError, match="'in' takes a non-empty list"):
        build_condition("f", {"in": []}, LISTS)
    with pytest.raises(ConditionError, match="'in' takes a non-empty list"):
        build_condition("f", {"in": "kill"}, LISTS)


def test_named_list() -> None:
    assert holds({"list": "shells"}, "bash")
    assert holds({"list": "shells"}, ["ls", "ash"])
    assert not holds({"list": "shells"}, "zsh")


def test_unknown_list_name() -> None:
    with pytest.raises(ConditionError, match=r"f: no list named 'nope' \(lists: shells\)"):
        build_condition("f", {"list": "nope"}, LISTS)


# ---- regex -------------------------------------------------------------------------------------


def test_regex_searches_anywhere_unless_anchored() -> None:
    assert holds({"regex": "passwd"}, "cat /etc/passwd")
    assert not holds({"regex": "^passwd"}, "cat /etc/passwd")
    assert holds({"regex": r"^exec_start: (/bin/)?(bash|sh) $"}, "exec_start: /bin/bash ")
    assert not holds({"regex": r"^exec_start: (/bin/)?(bash|sh) $"}, "exec_start: bash -c id")


def test_regex_on_a_list_field_and_on_non_strings() -> None:
    assert holds({"regex": "^/etc"}, ["/srv", "/etc/nginx"])
    assert not holds({"regex": "^/etc"}, ["/srv", "/data/etc"])
    assert holds({"regex": "^tr"}, True)
    assert holds({"regex": r"^\d+$"}, 8080)


def test_regex_flags() -> None:
    assert holds({"regex": "(?i)^CREATE$"}, "create")


@pytest.mark.parametrize("pattern", ["(unclosed", "[z-a]", r"(a)\1", "(?=lookahead)", "a{2,1}"])
def test_bad_or_non_re2_regex_is_refused(pattern: str) -> None:
    with pytest.raises(ConditionError, match="bad regex"):
        build_condition("f", {"regex": pattern}, LISTS)


# ---- numbers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "bound", "value", "expected"),
    [
        ("gt", 10, 11, True),
        ("gt", 10, 10, False),
        ("ge", 10, 10, True),
        ("ge", 10, 9.5, False),
        ("lt", 10, 9, True),
        ("lt", 10, 10, False),
        ("le", 10, 10, True),
        ("le", 10, 10.5, False),
        ("gt", 0.5, "0.75", True),  # numeric text compares as a number
        ("gt", 1, "many", False),  # text that is not a number never compares
        ("gt", 0, True, False),  # booleans are not numbers
        ("lt", 5, [10, 3], True),  # any element of a list
        ("lt", 5, [10, 30], False),
    ],
)
def test_numeric_compare(op: str, bound: float, value: Any, expected: bool) -> None:
    assert holds({op: bound}, value) is expected


def test_range_with_two_bounds() -> None:
    assert holds({"ge": 1024, "lt": 65536}, 8080)
    assert not holds({"ge": 1024, "lt": 65536}, 80)
    assert not holds({"ge": 1024, "lt": 65536}, 70000)


@pytest.mark.parametrize("bound", ["10", True, None, [1]])
def test_numeric_bound_must_be_a_number(bound: Any) -> None:
    with pytest.raises(ConditionError, match="takes a number"):
        build_condition("f", {"gt": bound}, LISTS)


# ---- cidr --------------------------------------------------------------------------------------


def test_cidr() -> None:
    assert holds({"cidr": "10.0.0.0/8"}, "10.20.30.40")
    assert not holds({"cidr": "10.0.0.0/8"}, "11.0.0.1")
    assert holds({"cidr": ["192.168.0.0/16", "fd00::/8"]}, "fd12::1")
    assert holds({"cidr": "10.0.0.0/8"}, ["8.8.8.8", "10.1.1.1"])
    assert not holds({"cidr": "10.0.0.0/8"}, "not-an-ip")
    assert not holds({"cidr": "10.0.0.0/8"}, "10.0.0.1:8080")


@pytest.mark.parametrize("block", ["10.0.0.300/8", "10.0.0.0/33", "example.com", ["10.0.0.0/8", "x"]])
def test_bad_cidr_is_refused(block: Any) -> None:
    with pytest.raises(ConditionError, match="f: bad CIDR"):
        build_condition("f", {"cidr": block}, LISTS)


# ---- exists / not ------------------------------------------------------------------------------


def test_exists_true() -> None:
    assert holds({"exists": True}, "x")
    assert holds({"exists": True}, "")
    assert holds({"exists": True}, False)
    assert not holds({"exists": True}, None)


def test_exists_false_matches_only_a_missing_field() -> None:
    assert holds({"exists": False}, None)
    assert not holds({"exists": False}, "x")
    assert not holds({"exists": False}, "")


def test_missing_field_fails_every_positive_test() -> None:
    for spec in ("x", {"in": ["x"]}, {"regex": "."}, {"gt": 0}, {"cidr": "0.0.0.0/0"}, {"list": "shells"}):
        assert not holds(spec, None), spec


def test_not_inverts() -> None:
    assert holds({"equals": "root", "not": True}, "www-data")
    assert not holds({"equals": "root", "not": True}, "root")
    assert not holds({"regex": "^/etc", "not": True}, "/etc/passwd")
    # negation of "any element matches" is "no element matches"
    assert not holds({"in": ["pid"], "not": True}, ["network", "pid"])
    assert holds({"in": ["pid"], "not": True}, ["network"])


def test_not_false_is_plain() -> None:
    assert holds({"equals": "root", "not": False}, "root")


def test_all_tests_in_one_condition_must_hold() -> None:
    spec = {"regex": "^10\\.", "cidr": "10.0.0.0/24"}
    assert holds(spec, "10.0.0.5")
    assert not holds(spec, "10.0.1.5")


# ---- malformed conditions ----------------------------------------------------------------------


def test_unknown_operator() -> None:
    with pytest.raises(ConditionError, match=r"f: unknown operator 'regexp'; use one of equals, regex"):
        build_condition("f", {"regexp": "x"}, LISTS)


def test_empty_condition() -> None:
    with pytest.raises(ConditionError, match="f: empty condition"):
        build_condition("f", {}, LISTS)


@pytest.mark.parametrize("op", ["exists", "not"])
def test_exists_and_not_take_booleans(op: str) -> None:
    with pytest.raises(ConditionError, match=f"'{op}' takes true or false"):
        build_condition("f", {op: "yes"}, LISTS)


def test_bad_regex_message_names_the_field_and_reads_as_text() -> None:
    with pytest.raises(ConditionError) as info:
        build_condition("docker.Action", {"regex": "(unclosed"}, LISTS)
    message = str(info.value)
    assert message.startswith("docker.Action: ")
    assert "b'" not in message
    assert "missing )" in message


def test_bad_regex_writes_nothing_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    # RE2 logs parse errors from C++ unless told not to; the loader reports them instead.
    with pytest.raises(ConditionError):
        build_condition("f", {"regex": "(still unclosed"}, LISTS)
    assert "Error parsing" not in capfd.readouterr().err
