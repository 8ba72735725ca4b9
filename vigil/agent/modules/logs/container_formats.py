"""Container log files: Docker's json-file lines, Kubernetes CRI lines, and who wrote them (pure).

Both runtimes split long messages: Docker writes parts without the final `\\n` in `log`, CRI tags
parts `P` and the last one `F`. `PartialJoiner` puts a message back together, one per stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from vigil.agent.modules.logs.line_splitter import HeadKeeper


@dataclass(frozen=True, slots=True)
class ContainerLine:
    message: bytes
    stream: str
    time: float | None
    partial: bool


def _time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def parse_docker_json(line: bytes) -> ContainerLine:
    """`{"log":"GET / ...\\n","stream":"stdout","time":"2024-05-01T10:00:00.123456789Z"}`; ValueError if not."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not a json-file log entry: {exc}") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("log"), str):
        raise ValueError("not a json-file log entry: no `log` text")
    text: str = entry["log"]
    partial = not text.endswith("\n")
    message = text[:-1] if not partial else text
    stream = entry.get("stream")
    when = entry.get("time")
    return ContainerLine(message.encode(), stream if isinstance(stream, str) else "stdout",
                         _time(when) if isinstance(when, str) else None, partial)


_CRI = re.compile(rb"^(\S+) (stdout|stderr) ([PF])(?:\S*) ?(.*)$", re.DOTALL)


def parse_cri(line: bytes) -> ContainerLine:
    """`2016-10-06T00:17:09.669794202Z stdout F the message`; ValueError if not."""
    match = _CRI.match(line)
    if match is None:
        raise ValueError("not a CRI log line (time, stream, P/F tag, message)")
    when, stream, tag, message = match.groups()
    return ContainerLine(message, stream.decode(), _time(when.decode(errors="replace")), tag == b"P")


class PartialJoiner:
    """Joins parts of one message per stream, keeping at most `limit` bytes of it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pending: dict[str, HeadKeeper] = {}

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def add(self, line: ContainerLine) -> tuple[bytes, int] | None:
        """The whole message and its length once its last part is in; None while parts come."""
        pending = self._pending.get(line.stream)
        if pending is None:
            if not line.partial:
                return line.message, len(line.message)
            pending = self._pending[line.stream] = HeadKeeper(self.limit)
        pending.add(line.message)
        if line.partial:
            return None
        del self._pending[line.stream]
        return pending.take()

    def flush(self) -> list[tuple[str, bytes, int]]:
        """Messages whose last part never came (the file ended): given as they are."""
        out = [(stream, *p.take()) for stream, p in self._pending.items()]
        self._pending.clear()
        return out


_HEX_ID = re.compile(r"^[0-9a-f]{64}$")
_CRI_NAME = re.compile(r"^(?P<pod>[^_]+)_(?P<namespace>[^_]+)_(?P<container>.+)-(?P<id>[0-9a-f]{64})\.log$")


def cri_identity(file_name: str) -> dict[str, Any] | None:
    """`/var/log/containers/<pod>_<namespace>_<container>-<id>.log`, as kubelet names it."""
    match = _CRI_NAME.match(file_name)
    if match is None:
        return None
    return {"container": {"id": match["id"], "name": match["container"]},
            "kubernetes": {"pod": match["pod"], "namespace": match["namespace"], "container": match["container"]}}


def docker_identity(container_id: str, config: dict[str, Any] | None) -> dict[str, Any] | None:
    """From the engine's own record of the container (`config.v2.json` beside its log)."""
    if not _HEX_ID.match(container_id):
        return None
    meta: dict[str, Any] = {"container": {"id": container_id}}
    if not isinstance(config, dict):
        return meta
    name = config.get("Name")
    if isinstance(name, str) and name:
        meta["container"]["name"] = name.lstrip("/")
    spec = config.get("Config")
    if isinstance(spec, dict):
        if isinstance(spec.get("Image"), str):
            meta["container"]["image"] = spec["Image"]
        labels = spec.get("Labels")
        if isinstance(labels, dict) and isinstance(labels.get("io.kubernetes.pod.name"), str):
            meta["kubernetes"] = {"pod": labels["io.kubernetes.pod.name"],
                                  "namespace": labels.get("io.kubernetes.pod.namespace"),
                                  "container": labels.get("io.kubernetes.container.name")}
    return meta
