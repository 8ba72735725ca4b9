"""Shipped Docker rules: real engine events, parity with Wazuh, the seed alerts, posture and exec cases."""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from vigil.agent.modules.docker import normalize
from vigil.alert import MitreCatalog
from vigil.event import AgentRef, Event
from vigil.manager.analysis.analyzer import Analyzer

from .support import (
    CONTAINER_ID,
    SEED,
    TIMESTAMP_RE,
    WAZUH_DOCKER_RULES,
    analyzer,
    docker_event,
    docker_obj,
    exec_event,
    inspect_json,
    read_jsonl,
    shipped_rules,
)
from .test_auth_log_rules import example_events as auth_log_examples
from .test_k8s_rules import example_events as k8s_audit_examples
from .test_k8s_watch_normalize import example_events as k8s_watch_examples
from .test_k8s_webhook_unit import example_events as k8s_webhook_examples
from .test_package_user_rules import example_events as package_user_examples
from .test_system_log_rules import example_events as system_log_examples
from .test_web_log_rules import example_events as web_log_examples


def winner(an: Analyzer, event: Event) -> int | None:
    match = an.analyse(event).match
    return match.rule.id if match.rule is not None else None


def module_event(obj: dict[str, Any]) -> Event:
    """What the Docker module emits for an event when it has no inspect data (execs still get data.exec)."""
    info = normalize.exec_info(obj["Action"], None)
    return docker_event(obj, {"exec": info} if info else {})


# ---- every real event of the capture -----------------------------------------------------------

ONE_PER_ACTION = {
    ("container", "archive-path"): 87911,
    ("container", "attach"): 87922,
    ("container", "commit"): 87917,
    ("container", "create"): 87901,
    ("container", "destroy"): 87902,
    ("container", "die"): 87924,
    ("container", "exec_create: echo hi"): 87900,
    ("container", "exec_die"): 87900,
    ("container", "exec_start: echo hi"): 87907,
    ("container", "export"): 87923,
    ("container", "extract-to-dir"): 87910,
    ("container", "health_status: healthy"): 87900,
    ("container", "health_status: unhealthy"): 200131,
    ("container", "kill"): 87924,
    ("container", "oom"): 200130,
    ("container", "pause"): 87905,
    ("container", "prune"): 87900,
    ("container", "rename"): 87935,
    ("container", "resize"): 87952,
    ("container", "restart"): 87909,
    ("container", "start"): 87903,
    ("container", "stop"): 87904,
    ("container", "top"): 87926,
    ("container", "unpause"): 87906,
    ("container", "update"): 87925,
    ("image", "delete"): 87921,
    ("image", "import"): 87920,
    ("image", "load"): 87933,
    ("image", "prune"): 87900,
    ("image", "pull"): 87932,
    ("image", "push"): 87958,
    ("image", "save"): 87934,
    ("image", "tag"): 87918,
    ("image", "untag"): 87919,
    ("network", "connect"): 87928,
    ("network", "create"): 87930,
    ("network", "destroy"): 87931,
    ("network", "disconnect"): 87929,
    ("network", "prune"): 87927,
    ("volume", "create"): 87913,
    ("volume", "destroy"): 87914,
    ("volume", "mount"): 87915,
    ("volume", "prune"): 87912,
    ("volume", "unmount"): 87916,
}


def test_one_event_per_action_gives_the_expected_rule() -> None:
    events = read_jsonl("one-per-action.jsonl")
    assert {(e["Type"], e["Action"]) for e in events} == set(ONE_PER_ACTION)
    an = analyzer()
    got = {(e["Type"], e["Action"]): winner(an, module_event(e)) for e in events}
    assert got == ONE_PER_ACTION


def test_one_event_per_action_alerts_read_well() -> None:
    an = analyzer()
    for obj in read_jsonl("one-per-action.jsonl"):
        result = an.analyse(module_event(obj))
        assert result.match.rule is not None
        if result.match.rule.level < 3:
            assert result.alert is None
            continue
        assert result.alert is not None
        description = result.alert["rule"]["description"]
        assert "$(" not in description
        assert "  " not in description and not description.endswith(" "), description
        name = obj["Actor"]["Attributes"].get("name")
        if obj["Type"] in ("container", "network") and name:
            assert name in description, description


def test_every_event_of_the_real_session_is_handled() -> None:
    events = read_jsonl("session-raw.jsonl")
    an = analyzer()
    winners = set()
    for obj in events:
        result = an.analyse(module_event(obj))
        assert result.match.rule is not None, obj
        assert result.match.chain[0] == 87900
        assert result.alert is None or "$(" not in result.alert["rule"]["description"]
        winners.add(result.match.rule.id)
    assert len(events) > 300
    # without inspect data, health-check execs look like shells (and even a burst of them)
    assert winners - set(ONE_PER_ACTION.values()) == {200110, 200140}


def test_session_with_known_health_checks_has_no_shell_burst() -> None:
    # containers `hc` and `hc2` of the capture ran with --health-cmd 'true' and 'exit 1'
    healthchecks = {
        name: normalize.healthcheck_command(inspect_json(healthcheck=["CMD-SHELL", cmd]))
        for name, cmd in (("hc", "true"), ("hc2", "exit 1"))
    }
    an = analyzer()
    winners = []
    for obj in read_jsonl("session-raw.jsonl"):
        info = normalize.exec_info(obj["Action"], healthchecks.get(obj["Actor"]["Attributes"].get("name")))
        winners.append(winner(an, docker_event(obj, {"exec": info} if info else {})))
    assert 200140 not in winners
    assert an.engine.suppressed == {(87907, "healthcheck"): 9}
    # the three `sh -c ...` execs people ran in container `pc` still alert
    assert winners.count(200110) == 3


# ---- parity with Wazuh's Docker rules ----------------------------------------------------------


def wazuh_rules() -> dict[int, ET.Element]:
    if not WAZUH_DOCKER_RULES.is_file():
        pytest.skip(f"{WAZUH_DOCKER_RULES} is not present")
    root = ET.fromstring("<root>" + WAZUH_DOCKER_RULES.read_text(encoding="utf-8") + "</root>")
    return {int(r.attrib["id"]): r for r in root.iter("rule")}


def test_same_ids_and_levels_as_wazuh() -> None:
    wazuh = wazuh_rules()
    assert set(wazuh) == set(range(87900, 87959))
    ours = shipped_rules().rules
    mismatches = {
        rid: (int(rule.attrib["level"]), ours[rid].level if rid in ours else None)
        for rid, rule in wazuh.items()
        if rid not in ours or ours[rid].level != int(rule.attrib["level"])
    }
    assert mismatches == {}


def test_same_parents_as_wazuh() -> None:
    ours = shipped_rules().rules
    for rid, rule in wazuh_rules().items():
        parent = rule.findtext("if_sid")
        expected = tuple(int(p) for p in re.split(r"[,\s]+", parent.strip())) if parent else ()
        assert ours[rid].if_sid == expected, rid


def test_vigil_docker_ids_stay_out_of_wazuh_range() -> None:
    ours = shipped_rules().rules
    for rid, rule in ours.items():
        if "docker" in rule.groups and not 87900 <= rid <= 87958:
            assert 200100 <= rid <= 200199, rid


# ---- the seed's two alerts ---------------------------------------------------------------------

SEED_CREATE = {
    "Action": "create",
    "Actor": {
        "Attributes": {
            "image": "nginx",
            "maintainer": "NGINX Docker Maintainers <docker-maint@nginx.com>",
            "name": "nginx_container",
        },
        "ID": CONTAINER_ID,
    },
    "Type": "container",
    "from": "nginx",
    "id": CONTAINER_ID,
    "scope": "local",
    "status": "create",
    "time": "1599186260",
    "timeNano": "1599186260265422592.000000",
}
SEED_EXEC = {
    "Action": "exec_start: cat /etc/passwd",
    "Actor": {
        "Attributes": {
            "execID": "363d220ce7a34c521707477d14b7700e4fb26987f9f4e27bc558788ce66570b4",
            "image": "nginx",
            "maintainer": "NGINX Docker Maintainers <docker-maint@nginx.com>",
            "name": "nginx_container",
        },
        "ID": CONTAINER_ID,
    },
    "Type": "container",
    "from": "nginx",
    "id": CONTAINER_ID,
    "scope": "local",
    "status": "exec_start: cat /etc/passwd",
    "time": "1599186799",
    "timeNano": "1599186799425748992.000000",
}
SEED_AGENT = AgentRef("006", "RHEL7", "10.0.1.214")


def test_seed_events_are_in_the_seed_document() -> None:
    if not SEED.is_file():
        pytest.skip(f"{SEED} is not present")
    text = SEED.read_text(encoding="utf-8")
    for needle in (
        '"timeNano": "1599186260265422592.000000"',
        '"Action": "exec_start: cat /etc/passwd"',
        '"description": "Docker: Container nginx_container created"',
        '"description": "Docker: Command launched in container nginx_container"',
    ):
        assert needle in text


@pytest.mark.parametrize(
    ("docker", "rule_id", "description", "timestamp", "with_exec"),
    [
        (
            SEED_CREATE,
            "87901",
            "Docker: Container nginx_container created",
            "2020-09-04T02:24:20.265+0000",
            False,
        ),
        (
            SEED_EXEC,
            "87907",
            "Docker: Command launched in container nginx_container",
            "2020-09-04T02:33:19.425+0000",
            False,
        ),
        (
            SEED_EXEC,
            "87907",
            "Docker: Command launched in container nginx_container",
            "2020-09-04T02:33:19.425+0000",
            True,
        ),
    ],
)
def test_seed_alerts(
    docker: dict[str, Any], rule_id: str, description: str, timestamp: str, with_exec: bool
) -> None:
    original = copy.deepcopy(docker)
    event = module_event(copy.deepcopy(docker)) if with_exec else docker_event(copy.deepcopy(docker))
    event.agent = SEED_AGENT
    alert = analyzer().analyse(event).alert
    assert alert is not None
    assert alert["rule"]["id"] == rule_id
    assert alert["rule"]["level"] == 3
    assert alert["rule"]["description"] == description
    assert re.match(TIMESTAMP_RE, alert["timestamp"])
    assert alert["timestamp"] == timestamp
    assert alert["agent"] == {"id": "006", "name": "RHEL7", "ip": "10.0.1.214"}
    assert alert["manager"] == {"name": "vigil-test-manager"}
    assert alert["decoder"] == {"name": "json"}
    assert alert["location"] == "docker"
    assert alert["data"]["docker"] == original
    assert alert["data"]["integration"] == "docker"
    assert "full_log" not in alert


# ---- container posture (from docker inspect) ---------------------------------------------------


def bind(source: str, destination: str = "/host") -> dict[str, Any]:
    return {"Type": "bind", "Source": source, "Destination": destination, "Mode": "", "RW": True}


NAMED_VOLUME = {
    "Type": "volume",
    "Name": "data",
    "Source": "/var/lib/docker/volumes/data/_data",
    "Destination": "/data",
    "Driver": "local",
    "RW": True,
}

POSTURE_FIRES: dict[str, tuple[dict[str, Any], list[dict[str, Any]] | None, int]] = {
    "privileged": ({"Privileged": True}, None, 200100),
    "etc-bind": ({"Binds": ["/etc:/host-etc:ro"]}, [bind("/etc", "/host-etc")], 200101),
    "root-bind": ({"Binds": ["/:/host"]}, [bind("/")], 200101),
    "proc-subdir-bind": ({}, [bind("/proc/1/root")], 200101),
    "docker-sock": (
        {"Binds": ["/var/run/docker.sock:/var/run/docker.sock"]},
        [bind("/var/run/docker.sock", "/var/run/docker.sock")],
        200102,
    ),
    "containerd-sock": ({}, [bind("/run/containerd/containerd.sock")], 200102),
    "pid-host": ({"PidMode": "host"}, None, 200103),
    "network-host": ({"NetworkMode": "host"}, None, 200104),
    "ipc-host": ({"IpcMode": "host"}, None, 200105),
    "uts-host": ({"UTSMode": "host"}, None, 200106),
    "cap-sys-admin": ({"CapAdd": ["SYS_ADMIN"]}, None, 200107),
    "cap-prefixed-lowercase": ({"CapAdd": ["cap_sys_ptrace"]}, None, 200107),
    "cap-all": ({"CapAdd": ["ALL"]}, None, 200107),
    "seccomp-unconfined": ({"SecurityOpt": ["seccomp=unconfined"]}, None, 200108),
    "seccomp-unconfined-colon": ({"SecurityOpt": ["seccomp:unconfined"]}, None, 200108),
    "apparmor-unconfined": ({"SecurityOpt": ["apparmor=unconfined"]}, None, 200109),
}

POSTURE_NEAR_MISSES: dict[str, tuple[dict[str, Any], list[dict[str, Any]] | None]] = {
    "plain": ({}, None),
    "not-privileged": ({"Privileged": False}, None),
    "named-volume": ({"Binds": ["data:/data"]}, [NAMED_VOLUME]),
    "srv-data-bind": ({"Binds": ["/srv/data:/data"]}, [bind("/srv/data", "/data")]),
    "etcetera-bind": ({}, [bind("/etcetera")]),
    "home-subdir-bind": ({}, [bind("/home/app/src")]),
    "sock-lookalike": ({}, [bind("/srv/docker.sock.bak")]),
    "pid-container": ({"PidMode": "container:" + "a" * 64}, None),
    "network-bridge": ({"NetworkMode": "bridge"}, None),
    "network-none": ({"NetworkMode": "none"}, None),
    "ipc-shareable": ({"IpcMode": "shareable"}, None),
    "uts-private": ({"UTSMode": ""}, None),
    "cap-chown": ({"CapAdd": ["CHOWN"]}, None),
    "cap-drop-all": ({"CapDrop": ["ALL"]}, None),
    "seccomp-profile": ({"SecurityOpt": ["seccomp=/etc/docker/seccomp.json"]}, None),
    "apparmor-default": ({"SecurityOpt": ["apparmor=docker-default", "no-new-privileges"]}, None),
}


def posture_event(action: str, host: dict[str, Any], mounts: list[dict[str, Any]] | None) -> Event:
    container = normalize.posture(inspect_json(host=host, mounts=mounts))
    return docker_event(docker_obj("container", action), {"container": container})


@pytest.mark.parametrize("action", ["create", "start"])
@pytest.mark.parametrize("case", sorted(POSTURE_FIRES))
def test_posture_rule_fires(case: str, action: str) -> None:
    host, mounts, expected = POSTURE_FIRES[case]
    alert = analyzer().analyse(posture_event(action, host, mounts)).alert
    assert alert is not None
    assert alert["rule"]["id"] == str(expected)
    assert "web" in alert["rule"]["description"]
    assert f"({action})" in alert["rule"]["description"]


@pytest.mark.parametrize("action", ["create", "start"])
@pytest.mark.parametrize("case", sorted(POSTURE_NEAR_MISSES))
def test_posture_near_miss_is_a_plain_container_event(case: str, action: str) -> None:
    host, mounts = POSTURE_NEAR_MISSES[case]
    alert = analyzer().analyse(posture_event(action, host, mounts)).alert
    assert alert is not None
    assert alert["rule"]["id"] == {"create": "87901", "start": "87903"}[action]


def test_posture_descriptions_name_what_was_found() -> None:
    an = analyzer()
    alert = an.analyse(posture_event("create", {}, [bind("/etc")])).alert
    assert alert is not None
    assert alert["rule"]["description"] == (
        "Docker: Sensitive host path mounted into container web (create): /etc"
    )
    alert = an.analyse(posture_event("create", {"CapAdd": ["SYS_ADMIN"]}, None)).alert
    assert alert is not None
    assert alert["rule"]["description"].endswith(": SYS_ADMIN")
    alert = an.analyse(posture_event("create", {"Privileged": True}, None)).alert
    assert alert is not None
    assert alert["rule"]["description"] == "Docker: Privileged container web (create) from image nginx"
    assert alert["rule"]["level"] == 12


def test_worst_posture_finding_wins() -> None:
    host = {"Privileged": True, "PidMode": "host", "NetworkMode": "host"}
    alert = analyzer().analyse(posture_event("create", host, None)).alert
    assert alert is not None and alert["rule"]["id"] == "200100"
    alert = analyzer().analyse(posture_event("create", {"PidMode": "host", "UTSMode": "host"}, None)).alert
    assert alert is not None and alert["rule"]["id"] == "200103"


def test_posture_is_ignored_on_other_actions() -> None:
    alert = analyzer().analyse(posture_event("stop", {"Privileged": True}, None)).alert
    assert alert is not None and alert["rule"]["id"] == "87904"


@pytest.mark.parametrize(
    ("host", "mounts", "expected"),
    [
        ({"CapAdd": ["SYS_ADMIN", "NET_ADMIN"]}, None, "200107"),
        ({}, [bind("/etc", "/h/etc"), bind("/proc", "/h/proc")], "200101"),
    ],
    ids=["two-dangerous-caps", "two-sensitive-binds"],
)
def test_two_findings_of_one_kind(
    host: dict[str, Any], mounts: list[dict[str, Any]] | None, expected: str
) -> None:
    alert = analyzer().analyse(posture_event("create", host, mounts)).alert
    assert alert is not None and alert["rule"]["id"] == expected


# ---- commands run in containers ----------------------------------------------------------------

SHELL_COMMANDS = [
    "/bin/sh -i",
    "sh -c echo hi",
    "ash ",
    "zsh ",
    "busybox sh ",
    "/bin/busybox sh ",
    "bash -i",
    "bash -l ",
    "dash -c id",
    "env TERM=xterm bash ",
    "fish ",
]
EXACT_SHELLS = ["bash ", "sh ", "/bin/bash ", "/bin/sh ", "dash "]
PACKAGE_INSTALLS = [
    "apt-get install -y curl",
    "apt install curl",
    "apk add curl",
    "apk add --no-cache curl",
    "pip install requests",
    "pip3 install -U requests",
    "npm install x",
    "npm i x",
    "yum install x",
    "dnf install -y x",
    "/usr/bin/apt-get install -y nmap",
    "sh -c apt-get update && apt-get install -y x",
    "dpkg -i /tmp/x.deb",
    "gem install x",
]
PLAIN_COMMANDS = [
    "ls -la",
    "cat /etc/apt/sources.list",
    "grep pip file",
    "echo hi",
    "id ",
    "cat /etc/passwd",
    "pip list",
    "apt list --installed",
    "npm run build",
    "python3 app.py",
]


@pytest.mark.parametrize("command", SHELL_COMMANDS)
def test_shell_in_container(command: str) -> None:
    alert = analyzer().analyse(exec_event(command)).alert
    assert alert is not None
    assert alert["rule"]["id"] == "200110"
    assert alert["rule"]["level"] == 5
    assert alert["rule"]["description"] == f"Docker: Shell started in container web: {command.rstrip()}"


@pytest.mark.parametrize("command", EXACT_SHELLS)
def test_interactive_shell_keeps_wazuh_rule(command: str) -> None:
    alert = analyzer().analyse(exec_event(command)).alert
    assert alert is not None
    assert (alert["rule"]["id"], alert["rule"]["level"]) == ("87908", 5)
    assert alert["rule"]["description"] == "Docker: Started shell session in container web"


@pytest.mark.parametrize("command", PACKAGE_INSTALLS)
def test_package_install_in_container(command: str) -> None:
    alert = analyzer().analyse(exec_event(command)).alert
    assert alert is not None
    assert (alert["rule"]["id"], alert["rule"]["level"]) == ("200111", 7)
    assert command.rstrip() in alert["rule"]["description"]


@pytest.mark.parametrize("command", PLAIN_COMMANDS)
def test_plain_command_is_command_launched(command: str) -> None:
    alert = analyzer().analyse(exec_event(command)).alert
    assert alert is not None
    assert (alert["rule"]["id"], alert["rule"]["level"]) == ("87907", 3)


def test_exec_without_enrichment_still_alerts() -> None:
    # an agent without inspect access sends no data.exec: the Wazuh rules still apply
    an = analyzer()
    obj = docker_obj("container", "exec_start: apt-get install -y curl")
    assert winner(an, docker_event(obj)) == 87907
    assert winner(an, docker_event(docker_obj("container", "exec_start: bash "))) == 87908


HEALTHCHECKS = [
    (["CMD-SHELL", "curl -f http://localhost/ || exit 1"], "/bin/sh -c curl -f http://localhost/ || exit 1"),
    (["CMD-SHELL", "true"], "/bin/sh -c true"),
    (["CMD", "pg_isready", "-U", "postgres"], "pg_isready -U postgres"),
]


@pytest.mark.parametrize(("test", "command"), HEALTHCHECKS)
def test_health_check_exec_is_counted_not_alerted(test: list[str], command: str) -> None:
    healthcheck = normalize.healthcheck_command(inspect_json(healthcheck=test))
    assert healthcheck == command
    an = analyzer()
    for _ in range(3):
        result = an.analyse(exec_event(command, healthcheck=healthcheck))
        assert result.alert is None
        assert result.match.rule is not None and result.match.rule.id == 87900
    assert an.engine.suppressed == {(87907, "healthcheck"): 3}


def test_health_check_near_misses_alert() -> None:
    an = analyzer()
    healthcheck = "/bin/sh -c true"
    # the same command in a container without that health check
    alert = an.analyse(exec_event("/bin/sh -c true", healthcheck=None)).alert
    assert alert is not None and alert["rule"]["id"] == "200110"
    # another command in a container that has the health check
    alert = an.analyse(exec_event("/bin/sh -c cat /etc/shadow", healthcheck=healthcheck)).alert
    assert alert is not None and alert["rule"]["id"] == "200110"
    assert an.engine.suppressed == {}


# ---- images ------------------------------------------------------------------------------------

IMAGE_ID = "sha256:" + "1" * 64
PREVIOUS_ID = "sha256:" + "2" * 64


@pytest.mark.parametrize(
    ("action", "attrs", "plain_id"),
    [
        ("pull", {"name": "nginx"}, 87932),
        ("tag", {"name": "nginx:latest"}, 87918),
        ("load", {"name": IMAGE_ID}, 87933),
        ("import", {"name": IMAGE_ID}, 87920),
    ],
)
def test_image_updated(action: str, attrs: dict[str, Any], plain_id: int) -> None:
    obj = docker_obj("image", action, attrs, actor_id="nginx:latest")
    obj["Actor"]["Attributes"] = attrs
    updated = {"name": "nginx:latest", "id": IMAGE_ID, "tags": ["nginx:latest"], "previous_id": PREVIOUS_ID}
    an = analyzer()
    alert = an.analyse(docker_event(obj, {"image": updated})).alert
    assert alert is not None
    assert (alert["rule"]["id"], alert["rule"]["level"]) == ("200120", 6)
    assert (
        alert["rule"]["description"]
        == f"Docker: Image nginx:latest updated: now {IMAGE_ID}, was {PREVIOUS_ID}"
    )
    first_seen = {"name": "nginx:latest", "id": IMAGE_ID, "tags": ["nginx:latest"]}
    assert winner(an, docker_event(obj, {"image": first_seen})) == plain_id
    assert winner(an, docker_event(obj)) == plain_id


def test_commit_over_an_existing_tag_is_an_update() -> None:
    obj = docker_obj("container", "commit", {"imageRef": "app:v2"})
    image = {"name": "app:v2", "id": IMAGE_ID, "tags": ["app:v2"], "previous_id": PREVIOUS_ID}
    assert winner(analyzer(), docker_event(obj, {"image": image})) == 200120


# ---- correlation: shells in one container ------------------------------------------------------

SECOND = 1_000_000_000
T0 = 1_795_702_990 * SECOND


def test_five_shells_in_two_minutes_in_one_container() -> None:
    an = analyzer()
    commands = ["bash ", "sh -c id", "ash ", "/bin/sh ", "bash -i"]
    ids = [
        winner(an, exec_event(c, time_nano=T0 + i * 25 * SECOND, exec_id=str(i) * 64))
        for i, c in enumerate(commands)
    ]
    assert ids == [87908, 200110, 200110, 87908, 200140]
    alert = an.analyse(exec_event("zsh ", time_nano=T0 + 110 * SECOND)).alert
    assert alert is not None and alert["rule"]["id"] == "200110"


def test_burst_alert_shape() -> None:
    an = analyzer()
    alerts = [an.analyse(exec_event("sh ", time_nano=T0 + i * SECOND)).alert for i in range(5)]
    last = alerts[-1]
    assert last is not None
    assert (last["rule"]["id"], last["rule"]["level"]) == ("200140", 10)
    assert last["rule"]["description"] == "Docker: 5 or more shells started in container web within 2 minutes"
    assert [a["rule"]["id"] for a in alerts if a] == ["87908"] * 4 + ["200140"]


def test_shells_spread_over_more_than_two_minutes_do_not_correlate() -> None:
    an = analyzer()
    ids = [winner(an, exec_event("sh ", time_nano=T0 + i * 31 * SECOND)) for i in range(8)]
    assert 200140 not in ids


def test_shells_in_different_containers_do_not_correlate() -> None:
    an = analyzer()
    ids = [
        winner(an, exec_event("sh ", container_id=f"{i:064d}", time_nano=T0 + i * SECOND)) for i in range(6)
    ]
    assert 200140 not in ids


def test_plain_commands_do_not_count_as_shells() -> None:
    an = analyzer()
    ids = [winner(an, exec_event("ls -la", time_nano=T0 + i * SECOND)) for i in range(6)]
    assert ids == [87907] * 6


# ---- Type/Action pairs the capture does not have (swarm, plugins, ...) -------------------------

SYNTHETIC = [
    ("config", "create", {}, 87937),
    ("config", "remove", {}, 87938),
    ("secret", "create", {}, 87940),
    ("secret", "remove", {}, 87941),
    # as in Wazuh, 87925 matches `update` of any type (Wazuh's own rule has no Type condition)
    ("config", "update", {}, 87925),
    ("secret", "update", {}, 87925),
    ("plugin", "pull", {}, 87943),
    ("plugin", "enable", {}, 87944),
    ("plugin", "disable", {}, 87945),
    ("plugin", "remove", {}, 87946),
    ("plugin", "create", {}, 87947),
    ("plugin", "install", {}, 87942),
    ("node", "create", {}, 87949),
    ("node", "update", {}, 87950),
    ("node", "remove", {}, 87948),
    ("node", "update", {"role.old": "worker", "role.new": "manager"}, 87951),
    ("service", "create", {}, 87955),
    ("service", "update", {}, 87956),
    ("service", "remove", {}, 87957),
    ("service", "rollback", {}, 87954),
    ("container", "checkpoint", {}, 87953),
]


@pytest.mark.parametrize(("kind", "action", "attrs", "expected"), SYNTHETIC)
def test_other_types_and_actions(kind: str, action: str, attrs: dict[str, Any], expected: int) -> None:
    obj = docker_obj(kind, action, attrs)
    assert winner(analyzer(), docker_event(obj)) == expected


def test_swarm_role_change_description() -> None:
    obj = docker_obj("node", "update", {"name": "node-2", "role.old": "worker", "role.new": "manager"})
    alert = analyzer().analyse(docker_event(obj)).alert
    assert alert is not None
    assert alert["rule"]["description"] == "Docker: Role of swarm node node-2 changed from worker to manager"


def test_event_not_from_docker_is_not_a_docker_alert() -> None:
    event = Event(
        module="logs",
        location="/var/log/app.json",
        timestamp=0.0,
        decoder="json",
        data={"integration": "dockerd", "docker": {"Type": "container", "Action": "create"}},
    )
    assert analyzer().analyse(event).match.rule is None


# ---- Vigil's own events ------------------------------------------------------------------------


def test_malformed_docker_input_becomes_an_alert() -> None:
    event = normalize.error_event(
        AgentRef(), "event is not valid JSON (unexpected end of data)", b'{"Type": "contai', 1_795_702_990.0
    )
    alert = analyzer().analyse(event).alert
    assert alert is not None
    assert (alert["rule"]["id"], alert["rule"]["level"]) == ("200001", 5)
    assert alert["rule"]["description"] == (
        "Vigil: malformed input from the docker module: event is not valid JSON (unexpected end of data)"
    )
    assert alert["full_log"] == '{"Type": "contai'


VIGIL_EVENTS = [
    ({"module": "docker", "kind": "reconnected", "target": "unix:///d.sock", "outage_seconds": 3.5}, 200002),
    ({"module": "docker", "kind": "events_dropped", "count": 12, "error": "queue full"}, 200003),
    ({"module": "docker", "kind": "analysis_error", "error": "KeyError: 'x'", "event_id": "e1"}, 200004),
    ({"module": "docker", "kind": "started"}, 200000),
    ({"module": "channel", "kind": "agent_connected", "first": True, "agent_id": "001", "agent_name": "n1",
      "version": "0.1.0", "reason": ""}, 501),
    ({"module": "channel", "kind": "agent_connected", "first": False, "agent_id": "001", "agent_name": "n1",
      "version": "0.1.0", "reason": ""}, 503),
    ({"module": "channel", "kind": "agent_disconnected", "agent_id": "001", "agent_name": "n1",
      "reason": "no keepalive for 31 s"}, 504),
    ({"module": "channel", "kind": "agent_removed", "agent_id": "001", "agent_name": "n1"}, 505),
    # near misses: a connection event that does not say whether it is the first, an unknown kind
    ({"module": "channel", "kind": "agent_connected", "agent_id": "001", "agent_name": "n1"}, 200000),
    ({"module": "channel", "kind": "agent_reconnected", "agent_id": "001", "agent_name": "n1"}, 200000),
]


@pytest.mark.parametrize(("vigil", "expected"), VIGIL_EVENTS)
def test_vigil_health_events(vigil: dict[str, Any], expected: int) -> None:
    event = Event(module="docker", location="docker", timestamp=0.0, decoder="vigil", data={"vigil": vigil})
    assert winner(analyzer(), event) == expected


# ---- house rules for the shipped content -------------------------------------------------------


def test_every_shipped_rule_is_reached_by_an_example_here() -> None:
    """House rule: every shipped rule has an event that fires it (level-0 rules as a step of a chain);
    the Docker examples are here, the text-log ones in test_auth_log_rules, test_web_log_rules,
    test_package_user_rules and test_system_log_rules."""
    events = [module_event(e) for e in read_jsonl("one-per-action.jsonl")]
    events += [docker_event(docker_obj(kind, action, attrs)) for kind, action, attrs, _ in SYNTHETIC]
    events += [posture_event("create", host, mounts) for host, mounts, _ in POSTURE_FIRES.values()]
    events += [exec_event(c) for c in SHELL_COMMANDS[:1] + EXACT_SHELLS[:1] + PACKAGE_INSTALLS[:1]]
    events.append(
        docker_event(
            docker_obj("image", "pull", {"name": "nginx"}),
            {"image": {"name": "nginx:latest", "id": IMAGE_ID, "previous_id": PREVIOUS_ID}},
        )
    )
    events += [exec_event("sh ", time_nano=T0 + i * SECOND) for i in range(5)]
    events += [
        Event(module="docker", location="docker", timestamp=0.0, decoder="vigil", data={"vigil": v})
        for v, _ in VIGIL_EVENTS
    ]
    events.append(normalize.error_event(AgentRef(), "bad", b"{", 0.0))
    events += auth_log_examples() + web_log_examples() + package_user_examples()  # the text-log rules
    events += system_log_examples()  # cron, apk, kernel, dockerd, containerd, kubelet, JSON access logs
    events += k8s_webhook_examples()  # the audit webhook refusing a request (200005)
    events += k8s_audit_examples()  # the Kubernetes audit rules (0570)
    events += k8s_watch_examples()  # the Kubernetes watch rules (0575) and the watch gap (200006)
    an = analyzer()
    reached = {rid for event in events for rid in an.analyse(event).match.chain}
    assert set(shipped_rules().rules) - reached == set()


def test_every_mitre_id_named_by_a_rule_is_in_the_catalog() -> None:
    catalog = MitreCatalog.shipped().table
    for rule in shipped_rules().rules.values():
        for tid in rule.mitre:
            assert tid in catalog, (rule.id, tid)
            assert catalog[tid].get("technique") and catalog[tid].get("tactic"), tid
