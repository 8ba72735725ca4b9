"""Helpers shared by the unit tests: shipped rules, Docker events shaped as the engine sends them."""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

from vigil.agent.modules.docker import normalize
from vigil.alert import MitreCatalog
from vigil.event import AgentRef, Event
from vigil.manager.analysis.analyzer import Analyzer
from vigil.manager.analysis.engine import Engine
from vigil.manager.analysis.rule_loader import LoadedRules, load_rules, shipped_rules_dir
from vigil.manager.analysis.ruleset import RuleSet
from vigil.manager.analysis.text_decoders import TextDecoders, load_decoders, shipped_decoders_dir

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURES = SHARED / "fixtures" / "docker"
WAZUH_DOCKER_RULES = SHARED / "reference" / "wazuh-4.14" / "rules" / "0560-docker_integration_rules.xml"
SEED = SHARED / "seed" / "containers-security-monitoring.txt"

CONTAINER_ID = "e9730949586a38d8ab25990234fb8ccba428e3ec1c8bfbf12fe08ed279aaf11d"
TIMESTAMP_RE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$"


@functools.lru_cache(maxsize=1)
def shipped_rules() -> LoadedRules:
    """The shipped rule set; Rule objects are never mutated after loading, so sharing them is safe."""
    return load_rules([shipped_rules_dir()])


@functools.lru_cache(maxsize=1)
def _shipped_ruleset() -> RuleSet:
    """The indexes are read-only once built; correlation state lives in the Engine."""
    return RuleSet(shipped_rules().rules)


@functools.lru_cache(maxsize=1)
def mitre() -> MitreCatalog:
    return MitreCatalog.shipped()


@functools.lru_cache(maxsize=1)
def shipped_decoders() -> TextDecoders:
    return load_decoders([shipped_decoders_dir()])


def analyzer(min_level: int = 3, rules: LoadedRules | None = None) -> Analyzer:
    """A fresh Analyzer (fresh correlation state) over the shipped rules unless others are given, with
    the shipped text decoders."""
    ruleset = RuleSet(rules.rules) if rules is not None else _shipped_ruleset()
    return Analyzer(Engine(ruleset), mitre(), "vigil-test-manager", min_level, shipped_decoders())


def read_jsonl(name: str) -> list[dict[str, Any]]:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"fixture {path} is not present")
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def docker_obj(
    kind: str,
    action: str,
    attrs: dict[str, Any] | None = None,
    actor_id: str = CONTAINER_ID,
    time_nano: int = 1_795_702_990_703_956_839,
) -> dict[str, Any]:
    """A Docker Engine event in the shape dockerd sends (Type/Action/Actor plus the legacy fields)."""
    return {
        "status": action,
        "id": actor_id,
        "from": "nginx",
        "Type": kind,
        "Action": action,
        "Actor": {"ID": actor_id, "Attributes": {"image": "nginx", "name": "web", **(attrs or {})}},
        "scope": "local",
        "time": time_nano // 1_000_000_000,
        "timeNano": time_nano,
    }


def docker_event(
    obj: dict[str, Any], enrichment: dict[str, Any] | None = None, agent: AgentRef | None = None
) -> Event:
    return normalize.build_event(obj, agent or AgentRef("001", "host1", "10.0.0.1"), enrichment or {})


def exec_event(
    command: str,
    healthcheck: str | None = None,
    container_id: str = CONTAINER_ID,
    time_nano: int = 1_795_702_990_703_956_839,
    exec_id: str = "a" * 64,
) -> Event:
    """`docker exec` as the module emits it: the engine's `exec_start: <argv joined>` plus data.exec."""
    action = f"exec_start: {command}"
    obj = docker_obj("container", action, {"execID": exec_id}, actor_id=container_id, time_nano=time_nano)
    info = normalize.exec_info(action, healthcheck)
    assert info is not None
    return docker_event(obj, {"exec": info})


def inspect_json(
    *,
    host: dict[str, Any] | None = None,
    mounts: list[dict[str, Any]] | None = None,
    healthcheck: list[str] | None = None,
) -> dict[str, Any]:
    """`docker inspect` output of a plain container (Docker 20.10), with overrides for HostConfig."""
    host_config: dict[str, Any] = {
        "Binds": None,
        "NetworkMode": "default",
        "PidMode": "",
        "IpcMode": "private",
        "UTSMode": "",
        "CapAdd": None,
        "CapDrop": None,
        "Privileged": False,
        "ReadonlyRootfs": False,
        "SecurityOpt": None,
    }
    host_config.update(host or {})
    config: dict[str, Any] = {"Hostname": "e9730949586a", "User": "", "Image": "nginx", "Cmd": ["nginx"]}
    if healthcheck is not None:
        config["Healthcheck"] = {"Test": healthcheck, "Interval": 5_000_000_000}
    return {
        "Id": CONTAINER_ID,
        "Name": "/web",
        "Image": "sha256:" + "f" * 64,
        "State": {"Status": "created", "Running": False},
        "HostConfig": host_config,
        "Config": config,
        "Mounts": mounts or [],
    }


def write_rules(directory: Path, text: str, name: str = "rules.yml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def line_of_text(path: Path, needle: str) -> int:
    """1-based line of the first line of `path` that contains `needle`."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")
