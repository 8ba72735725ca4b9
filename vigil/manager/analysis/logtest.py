"""`vigil logtest`: an event or log lines through decoding and the rules, showing every step (like wazuh-logtest)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from vigil.agent.modules.docker import normalize
from vigil.errors import EventError
from vigil.event import AgentRef, Event
from vigil.manager.analysis.analyzer import Analysed, Analyzer
from vigil.manager.analysis.decoders import TEXT
from vigil.manager.analysis.engine import Step


@dataclass
class LogtestResult:
    event: Event
    analysed: Analysed
    steps: list[Step]


def events_from_text(text: str, agent: AgentRef) -> list[Event]:
    """A JSON object is one event; anything else is text, one event per line (like wazuh-logtest)."""
    if text.lstrip().startswith("{"):
        return [event_from_text(text, agent)]
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise EventError("no input: give a JSON event or log lines")
    return [Event(module="logtest", location="logtest", timestamp=time.time(), data={}, decoder=TEXT, raw=line,
                  agent=agent) for line in lines]


def event_from_text(text: str, agent: AgentRef) -> Event:
    """A JSON object: a bare Docker event (has Type/Action), or event data with `integration`."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise EventError(f"input is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise EventError("input must be a JSON object")
    if "Type" in obj and "Action" in obj:
        enrichment: dict[str, Any] = {}
        info = normalize.exec_info(str(obj["Action"]), None)
        if info is not None:
            enrichment["exec"] = info
        return normalize.build_event(obj, agent, enrichment)
    docker_event = obj.get("docker")
    when = normalize.event_time_nano(docker_event) / 1e9 if isinstance(docker_event, dict) else time.time()
    return Event(module="logtest", location="logtest", timestamp=when or time.time(), data=obj, decoder="json",
                 agent=agent)


def run_logtest(analyzer: Analyzer, event: Event) -> LogtestResult:
    steps: list[Step] = []
    analysed = analyzer.analyse(event, trace=steps)
    return LogtestResult(event, analysed, steps)


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Field paths and values as rules see them, for display."""
    if isinstance(data, dict):
        out: list[tuple[str, Any]] = []
        for key, value in data.items():
            out.extend(flatten(value, f"{prefix}{key}."))
        return out
    return [(prefix.rstrip("."), data)]
