"""Pure: an HTTP log request's body to events, and the pod each line says it comes from.

A JSON object is kept under `data.json`; its `message` or `log` text, when there is one, is the line the
manager decodes. The pod is named by the `X-Vigil-*` headers or the line's own `kubernetes` object.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson

from vigil.agent.modules.logs.lines import as_text, line_event
from vigil.event import AgentRef, Event

IDENTITY_HEADERS = {"pod": "X-Vigil-Pod", "namespace": "X-Vigil-Namespace", "container": "X-Vigil-Container"}
# Fluent Bit's kubernetes filter names them pod_name, namespace_name, container_name.
IDENTITY_ALIASES = {"pod": ("pod", "pod_name"), "namespace": ("namespace", "namespace_name"),
                    "container": ("container", "container_name")}
MAX_NAME = 253  # a DNS subdomain, the longest Kubernetes object name


def split_body(body: bytes, content_type: str) -> list[bytes]:
    """The lines of a body; an `application/json` body that is one object or an array is taken whole."""
    if content_type == "application/json" and body.lstrip()[:1] in (b"{", b"["):
        with contextlib.suppress(orjson.JSONDecodeError):
            value = orjson.loads(body)
            items = value if isinstance(value, list) else [value]
            return [item.encode() if isinstance(item, str) else orjson.dumps(item) for item in items]
    lines = body.split(b"\n")
    return [line[:-1] if line.endswith(b"\r") else line for line in lines if line.strip()]


def clean_name(value: Any) -> str | None:
    """A pod, namespace or container name as sent, if it is a usable one."""
    if not isinstance(value, str):
        return None
    name = value.strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        return None
    return name


def header_identity(headers: dict[str, str]) -> dict[str, str]:
    out = {key: clean_name(headers.get(header)) for key, header in IDENTITY_HEADERS.items()}
    return {key: value for key, value in out.items() if value is not None}


def line_identity(obj: dict[str, Any]) -> dict[str, str]:
    """`kubernetes: {pod, namespace, container}` (or Fluent Bit's `pod_name`, ...) in a JSON line."""
    block = obj.get("kubernetes")
    if not isinstance(block, dict):
        return {}
    out: dict[str, str] = {}
    for key, names in IDENTITY_ALIASES.items():
        for name in names:
            value = clean_name(block.get(name))
            if value is not None:
                out[key] = value
                break
    return out


def line_events(lines: list[bytes], location: str, agent: AgentRef, limit: int, now: float,
                identity: dict[str, str]) -> list[Event]:
    """One event per line; a line that names its pod replaces the headers' identity (one sender, many pods)."""
    return [_line(line, location, agent, limit, now, identity) for line in lines]


def _line(line: bytes, location: str, agent: AgentRef, limit: int, now: float, identity: dict[str, str]) -> Event:
    obj = _json_object(line) if len(line) <= limit else None
    who = (line_identity(obj) if obj is not None else None) or identity
    meta: dict[str, Any] = {"kubernetes": dict(who)} if who else {}
    if obj is None:  # text, or a line too long to keep whole: cut and marked like any collected line
        return line_event(line, location, agent, limit, now, meta)
    meta["json"] = obj
    text = next((obj[k] for k in ("message", "log") if isinstance(obj.get(k), str)), None)
    # A message that is itself a JSON object is not handed on as text: the manager would take that object
    # as the whole event, dropping the pod and letting the sender pose as another source.
    if text is not None and _json_object(encoded := text.encode()) is None:
        return line_event(encoded, location, agent, limit, now, meta)
    # Structured only: the object is the event; kept under `json` so a sender cannot pose as another source.
    raw, _notes = as_text(line, limit)
    return Event(module="logs", location=location, timestamp=now, data=meta, decoder="json", agent=agent, raw=raw)


def _json_object(line: bytes) -> dict[str, Any] | None:
    if line.lstrip()[:1] != b"{":
        return None
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
