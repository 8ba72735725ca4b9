"""Fields: dotted paths into event data, including keys that themselves contain dots."""

from __future__ import annotations

import pytest

from vigil.manager.analysis.fields import Fields, as_text


def test_nested_path() -> None:
    fields = Fields({"docker": {"Actor": {"Attributes": {"name": "web"}}}})
    assert fields.get("docker.Actor.Attributes.name") == "web"
    assert fields.get("docker.Actor") == {"Attributes": {"name": "web"}}


def test_keys_with_dots_are_found() -> None:
    # Docker labels and Wazuh's swarm attributes put dots inside keys.
    fields = Fields(
        {
            "docker": {
                "Actor": {
                    "Attributes": {
                        "com.docker.compose.project": "shop",
                        "role.new": "manager",
                        "role.old": "worker",
                    }
                }
            }
        }
    )
    assert fields.get("docker.Actor.Attributes.com.docker.compose.project") == "shop"
    assert fields.get("docker.Actor.Attributes.role.new") == "manager"
    assert fields.get("docker.Actor.Attributes.role.old") == "worker"


def test_dotted_key_next_to_a_nested_one_with_the_same_prefix() -> None:
    # `role` exists as a mapping without `new`, so the resolver must fall back to the `role.new` key.
    fields = Fields({"a": {"role": {"other": 1}, "role.new": "x"}})
    assert fields.get("a.role.new") == "x"
    assert fields.get("a.role.other") == 1


@pytest.mark.parametrize("path", ["missing", "docker.nothing", "docker.Type.deeper", "docker.list.0", ""])
def test_missing_fields_are_none(path: str) -> None:
    fields = Fields({"docker": {"Type": "container", "list": [1, 2]}})
    assert fields.get(path) is None


def test_falsy_values_are_not_missing() -> None:
    fields = Fields({"a": False, "b": 0, "c": "", "d": [], "e": None})
    assert fields.get("a") is False
    assert fields.get("b") == 0
    assert fields.get("c") == ""
    assert fields.get("d") == []
    assert fields.get("e") is None


def test_raw_line_is_kept() -> None:
    assert Fields({}, raw="Jan 1 host sshd[1]: hello").raw == "Jan 1 host sshd[1]: hello"


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "true"), (False, "false"), (3, "3"), (3.0, "3"), (2.5, "2.5"), ("x", "x"), (0, "0")],
)
def test_as_text(value: object, text: str) -> None:
    assert as_text(value) == text
