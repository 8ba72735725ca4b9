"""Pure Docker functions: parsing the event stream, framing, checkpoints, inspect posture, exec and images."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from vigil.agent.modules.docker import normalize
from vigil.agent.modules.docker.checkpoint import Checkpoint
from vigil.agent.modules.docker.framing import frame_lines
from vigil.errors import EventError
from vigil.event import AgentRef

from .support import CONTAINER_ID, inspect_json, read_jsonl

MiB = 1024 * 1024


# ---- parse_event -------------------------------------------------------------------------------


def test_parse_event_returns_the_event_exactly() -> None:
    for obj in read_jsonl("one-per-action.jsonl"):
        assert normalize.parse_event(orjson.dumps(obj), MiB) == obj


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b'{"Type": "container", "Action": "cre', "not valid JSON"),
        (b"", "not valid JSON"),
        (b"not json at all", "not valid JSON"),
        (b'["container", "create"]', "must be a JSON object, got list"),
        (b'"create"', "must be a JSON object, got str"),
        (b'{"Action": "create"}', "no Type/Action"),
        (b'{"Type": "container"}', "no Type/Action"),
        (b'{"Type": "container", "Action": 5}', "no Type/Action"),
        (b'{"Type": "container", "Action": "create", "Actor": "web"}', "Actor must be an object"),
        (b'{"Type": "container", "Action": "exec_start: \xff\xfe"}', "UTF-8"),
    ],
)
def test_parse_event_errors(line: bytes, words: str) -> None:
    with pytest.raises(EventError, match=words):
        normalize.parse_event(line, MiB)


def test_parse_event_refuses_a_line_over_the_limit() -> None:
    big = b'{"Type": "container", "Action": "create", "pad": "' + b"x" * (5 * MiB) + b'"}'
    with pytest.raises(EventError) as info:
        normalize.parse_event(big, MiB)
    assert str(info.value) == f"event of {len(big)} bytes is larger than the {MiB}-byte limit"


def test_event_time_nano() -> None:
    assert normalize.event_time_nano({"timeNano": 1795702990703956839}) == 1795702990703956839
    assert normalize.event_time_nano({"time": 1599186260}) == 1599186260 * 10**9
    # Wazuh's docker-listener forwards these as text
    assert (
        abs(normalize.event_time_nano({"timeNano": "1599186260265422592.000000"}) - 1599186260265422592)
        < 1000
    )
    assert normalize.event_time_nano({"timeNano": "junk", "time": 5}) == 5 * 10**9
    assert normalize.event_time_nano({}) == 0
    assert normalize.event_time_nano({"timeNano": True}) == 0


def test_event_digest_identifies_a_line() -> None:
    a = normalize.event_digest(b'{"Type":"container","Action":"start"}')
    assert a == normalize.event_digest(b'{"Type":"container","Action":"start"}')
    assert a != normalize.event_digest(b'{"Type":"container","Action":"stop"}')


# ---- framing -----------------------------------------------------------------------------------


def test_lines_split_across_chunk_boundaries() -> None:
    chunks = [b'{"a":', b'1}\n{"b"', b":2}\n", b"\n", b'{"c":3}\n']
    assert list(frame_lines(chunks, 100)) == [(b'{"a":1}', 7), (b'{"b":2}', 7), (b'{"c":3}', 7)]


def test_several_lines_in_one_chunk_and_no_trailing_newline() -> None:
    assert list(frame_lines([b"one\ntwo\nthree"], 100)) == [(b"one", 3), (b"two", 3), (b"three", 5)]


def test_blank_lines_are_skipped() -> None:
    assert list(frame_lines([b"\n\n  \nx\n", b"\n"], 100)) == [(b"x", 1)]
    assert list(frame_lines([], 100)) == []


def test_oversize_line_is_cut_and_reported_with_its_full_length() -> None:
    chunks = [b"a" * 10, b"b" * 10, b"c\nnext\n"]
    assert list(frame_lines(chunks, 8)) == [(b"a" * 8, 21), (b"next", 4)]


def test_oversize_line_in_one_chunk_and_at_the_end() -> None:
    huge = b"x" * (5 * MiB)
    lines = list(frame_lines([b"ok\n" + huge + b"\nok2\n" + huge], MiB))
    assert [(line[:3], len(line), full) for line, full in lines] == [
        (b"ok", 2, 2),
        (b"xxx", MiB, 5 * MiB),
        (b"ok2", 3, 3),
        (b"xxx", MiB, 5 * MiB),
    ]


def test_line_exactly_at_the_limit_is_whole() -> None:
    assert list(frame_lines([b"12345678\n"], 8)) == [(b"12345678", 8)]


def test_framed_lines_parse() -> None:
    events = read_jsonl("one-per-action.jsonl")
    stream = b"".join(orjson.dumps(e) + b"\n" for e in events)
    chunks = [stream[i : i + 97] for i in range(0, len(stream), 97)]
    parsed = [normalize.parse_event(line, MiB) for line, _ in frame_lines(chunks, MiB)]
    assert parsed == events


# ---- checkpoint --------------------------------------------------------------------------------


def test_checkpoint_new_and_advance() -> None:
    cp = Checkpoint()
    assert cp.since() is None
    assert cp.is_new(100, "a")
    cp.advance(100, "a")
    assert not cp.is_new(100, "a")
    assert cp.is_new(100, "b")  # another event in the same nanosecond
    assert not cp.is_new(99, "z")  # older
    assert cp.is_new(101, "a")
    cp.advance(100, "b")
    assert cp.seen == {"a", "b"}
    cp.advance(101, "c")
    assert (cp.time_nano, cp.seen) == (101, {"c"})
    cp.advance(50, "old")  # never moves back
    assert (cp.time_nano, cp.seen) == (101, {"c"})


def test_checkpoint_since_has_nanoseconds() -> None:
    cp = Checkpoint()
    cp.advance(1795702990003956839, "d")
    assert cp.since() == "1795702990.003956839"


def test_checkpoint_state_round_trip() -> None:
    cp = Checkpoint()
    cp.advance(1795702990703956839, "d1")
    cp.advance(1795702990703956839, "d2")
    state = orjson.loads(orjson.dumps(cp.to_state()))
    again = Checkpoint.from_state(state)
    assert (again.time_nano, again.seen) == (1795702990703956839, {"d1", "d2"})
    assert not again.is_new(1795702990703956839, "d1")


@pytest.mark.parametrize(
    "state",
    [
        None,
        "garbage",
        42,
        [1, 2],
        {"time_nano": "soon"},
        {"time_nano": None},
        {"seen": 5},
        {"time_nano": [1]},
    ],
)
def test_checkpoint_from_garbage_starts_live(state: Any) -> None:
    cp = Checkpoint.from_state(state)
    assert (cp.time_nano, cp.seen, cp.since()) == (0, set(), None)


def test_resumed_stream_skips_what_was_handled() -> None:
    events = [orjson.dumps(e) for e in read_jsonl("session-raw.jsonl")]
    cp = Checkpoint()
    for line in events[:200]:
        obj = normalize.parse_event(line, MiB)
        cp.advance(normalize.event_time_nano(obj), normalize.event_digest(line))
    cp = Checkpoint.from_state(cp.to_state())
    # the engine's `since` is inclusive: it resends the boundary events, which must be skipped
    since = int(cp.since().replace(".", ""))  # type: ignore[union-attr]
    replay = [line for line in events if normalize.event_time_nano(orjson.loads(line)) >= since]
    new = [
        line
        for line in replay
        if cp.is_new(normalize.event_time_nano(orjson.loads(line)), normalize.event_digest(line))
    ]
    assert new == events[200:]


# ---- posture -----------------------------------------------------------------------------------


def test_posture_of_a_plain_container() -> None:
    posture = normalize.posture(inspect_json())
    assert posture == {
        "id": CONTAINER_ID,
        "name": "web",
        "image": "nginx",
        "image_id": "sha256:" + "f" * 64,
        "user": "",
        "privileged": False,
        "host_namespaces": [],
        "cap_add": [],
        "bind_sources": [],
        "readonly_rootfs": False,
        "seccomp_unconfined": False,
        "apparmor_unconfined": False,
        "security_opt": [],
        "healthcheck": None,
    }


def test_posture_of_a_dangerous_container() -> None:
    inspect = inspect_json(
        host={
            "Privileged": True,
            "PidMode": "host",
            "NetworkMode": "host",
            "IpcMode": "host",
            "UTSMode": "host",
            "CapAdd": ["SYS_ADMIN", "cap_net_raw", "CAP_SYS_ADMIN"],
            "SecurityOpt": ["seccomp=unconfined", "apparmor:unconfined", "label=disable"],
            "Binds": [
                "/var/run/docker.sock:/var/run/docker.sock",
                "/etc/:/host/etc:ro",
                "data:/data",
                "/srv//app/./logs:/logs",
            ],
            "ReadonlyRootfs": True,
        },
        mounts=[
            {"Type": "bind", "Source": "/var/run/docker.sock", "Destination": "/var/run/docker.sock"},
            {
                "Type": "volume",
                "Name": "data",
                "Source": "/var/lib/docker/volumes/data/_data",
                "Destination": "/data",
            },
        ],
        healthcheck=["CMD-SHELL", "curl -f http://localhost/"],
    )
    inspect["Config"]["User"] = "1000:1000"
    posture = normalize.posture(inspect)
    assert posture["privileged"] is True
    assert posture["host_namespaces"] == ["pid", "network", "ipc", "uts"]
    assert posture["cap_add"] == ["NET_RAW", "SYS_ADMIN"]
    assert posture["bind_sources"] == ["/var/run/docker.sock", "/etc", "/srv/app/logs"]
    assert posture["seccomp_unconfined"] and posture["apparmor_unconfined"]
    assert posture["security_opt"] == ["seccomp=unconfined", "apparmor:unconfined", "label=disable"]
    assert posture["readonly_rootfs"] is True
    assert posture["user"] == "1000:1000"
    assert posture["healthcheck"] == "/bin/sh -c curl -f http://localhost/"


def test_posture_of_an_incomplete_inspect() -> None:
    posture = normalize.posture({})
    assert posture["name"] == "" and posture["bind_sources"] == [] and posture["privileged"] is False


def test_posture_seccomp_profile_is_not_unconfined() -> None:
    posture = normalize.posture(inspect_json(host={"SecurityOpt": ["seccomp=/etc/profile-unconfined.json"]}))
    assert posture["seccomp_unconfined"] is False


# ---- health checks and exec --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("test", "command"),
    [
        (
            ["CMD-SHELL", "curl -f http://localhost/ || exit 1"],
            "/bin/sh -c curl -f http://localhost/ || exit 1",
        ),
        (["CMD", "pg_isready", "-U", "postgres"], "pg_isready -U postgres"),
        (["CMD", "true"], "true"),
        (["NONE"], None),
        ([], None),
        (None, None),
    ],
)
def test_healthcheck_command(test: list[str] | None, command: str | None) -> None:
    inspect = inspect_json(healthcheck=test) if test is not None else inspect_json()
    assert normalize.healthcheck_command(inspect) == command


def test_healthcheck_of_the_captured_session_matches_its_execs() -> None:
    # container `hc` was run with --health-cmd true: the engine reported `exec_start: /bin/sh -c true`
    actions = {
        e["Action"]
        for e in read_jsonl("session-raw.jsonl")
        if e["Actor"].get("Attributes", {}).get("name") == "hc"
    }
    healthcheck = normalize.healthcheck_command(inspect_json(healthcheck=["CMD-SHELL", "true"]))
    assert f"exec_start: {healthcheck}" in actions


@pytest.mark.parametrize(
    ("action", "command", "program", "args"),
    [
        ("exec_start: sh -c echo hi", "sh -c echo hi", "sh", ["-c", "echo", "hi"]),
        ("exec_start: bash ", "bash", "bash", []),
        ("exec_start: /bin/bash -i", "/bin/bash -i", "bash", ["-i"]),
        ("exec_start: busybox sh ", "busybox sh", "sh", ["sh"]),
        ("exec_start: /bin/busybox ash -l", "/bin/busybox ash -l", "ash", ["ash", "-l"]),
        (
            "exec_start: env -i TERM=xterm bash",
            "env -i TERM=xterm bash",
            "bash",
            ["-i", "TERM=xterm", "bash"],
        ),
        ("exec_start: nohup setsid zsh", "nohup setsid zsh", "zsh", ["setsid", "zsh"]),
        ("exec_start: busybox", "busybox", "busybox", []),
        ("exec_create: cat /etc/passwd", "cat /etc/passwd", "cat", ["/etc/passwd"]),
    ],
)
def test_exec_info(action: str, command: str, program: str, args: list[str]) -> None:
    info = normalize.exec_info(action, None)
    assert info == {"command": command, "program": program, "args": args, "healthcheck": False}


@pytest.mark.parametrize("action", ["exec_die", "create", "exec_start:", "health_status: healthy"])
def test_exec_info_ignores_other_actions(action: str) -> None:
    assert normalize.exec_info(action, None) is None


def test_exec_info_flags_the_health_check() -> None:
    assert normalize.exec_info("exec_start: /bin/sh -c true", "/bin/sh -c true")["healthcheck"] is True  # type: ignore[index]
    assert normalize.exec_info("exec_start: true ", "true")["healthcheck"] is True  # type: ignore[index]
    assert normalize.exec_info("exec_start: /bin/sh -c id", "/bin/sh -c true")["healthcheck"] is False  # type: ignore[index]
    assert normalize.exec_info("exec_start: /bin/sh -c true", None)["healthcheck"] is False  # type: ignore[index]


@pytest.mark.parametrize("command", ["timeout 600 sh", "nice -n 10 bash", "timeout -s KILL 60 sh -i"])
def test_exec_program_through_wrappers_with_operands(command: str) -> None:
    info = normalize.exec_info(f"exec_start: {command}", None)
    assert info is not None and info["program"] in ("sh", "bash")


# ---- images ------------------------------------------------------------------------------------


def fixture_event(kind: str, action: str) -> dict[str, Any]:
    return next(e for e in read_jsonl("one-per-action.jsonl") if (e["Type"], e["Action"]) == (kind, action))


@pytest.mark.parametrize(
    ("action", "name"),
    [
        ("pull", "127.0.0.1:5000/testimg:1"),
        ("push", "127.0.0.1:5000/testimg:1"),
        ("tag", "testimg:tagged"),
        ("load", None),
        ("import", None),
        ("save", None),
        ("untag", None),
    ],
)
def test_image_name_of_captured_events(action: str, name: str | None) -> None:
    assert normalize.image_name(fixture_event("image", action)) == name


@pytest.mark.parametrize(
    ("actor_id", "attr_name", "name"),
    [
        ("busybox:latest", "busybox", "busybox:latest"),
        ("busybox", "busybox", "busybox:latest"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000/app", "127.0.0.1:5000/app:latest"),
        ("sha256:" + "a" * 64, "registry.example.com/team/app:2", "registry.example.com/team/app:2"),
        ("", "", None),
    ],
)
def test_image_name_adds_latest(actor_id: str, attr_name: str, name: str | None) -> None:
    obj = {"Type": "image", "Action": "pull", "Actor": {"ID": actor_id, "Attributes": {"name": attr_name}}}
    assert normalize.image_name(obj) == name


def test_image_name_of_a_commit() -> None:
    assert normalize.image_name(fixture_event("container", "commit")) == "committed:1"
    obj = {"Type": "container", "Action": "commit", "Actor": {"ID": "c", "Attributes": {"name": "c"}}}
    assert normalize.image_name(obj) is None


# ---- envelopes ---------------------------------------------------------------------------------


def test_build_event_keeps_the_docker_event_as_sent() -> None:
    obj = fixture_event("container", "create")
    sent = orjson.dumps(obj)
    event = normalize.build_event(obj, AgentRef("002", "node-2"), {"container": {"privileged": False}})
    assert (event.module, event.location, event.decoder, event.raw) == ("docker", "docker", "json", None)
    assert event.timestamp == pytest.approx(obj["timeNano"] / 1e9)
    assert event.data == {"integration": "docker", "docker": obj, "container": {"privileged": False}}
    assert orjson.dumps(event.data["docker"]) == sent
    assert event.agent.to_dict() == {"id": "002", "name": "node-2"}


def test_error_event_keeps_a_readable_excerpt() -> None:
    event = normalize.error_event(AgentRef(), "event is not valid JSON", b"\xff" + b"x" * 1000, 5.0)
    assert event.decoder == "vigil" and event.timestamp == 5.0
    assert event.data["vigil"]["kind"] == "malformed_input"
    assert event.data["vigil"]["error"] == "event is not valid JSON"
    assert event.raw is not None and len(event.raw) == 512 and event.raw.startswith("\ufffd")
