"""The log collector module: host files and globs, Docker json-file and Kubernetes CRI container logs.

One thread polls every followed file. Each poll's lines go to the sink in one batch together with
the file's new offset, so after a crash or restart the file is read on from exactly there.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from vigil.agent.modules.base import BatchSink, StateReader
from vigil.agent.modules.logs.container_formats import (
    ContainerLine,
    PartialJoiner,
    cri_identity,
    docker_identity,
    parse_cri,
    parse_docker_json,
)
from vigil.agent.modules.logs.file_tail import FileTail, TailState
from vigil.agent.modules.logs.line_splitter import Line
from vigil.agent.modules.logs.lines import line_event
from vigil.config import LogsConfig
from vigil.event import AgentRef, Event

log = logging.getLogger(__name__)

STARTED_KEY = "logs.started"
# What one poll of one file hands on at most. Small batches stay in the CPU's cache: 256 KiB ran at
# 110k lines/s with 10 MB more memory, 1 MiB at 69k lines/s with 50 MB more (bench/log_collection.py).
BATCH_BYTES = 256 * 1024


def state_key(path: str) -> str:
    return f"logs.file:{path}"


@dataclass
class Source:
    path: str
    kind: str  # file, docker or cri
    tail: FileTail
    meta: dict[str, Any] | None = None
    joiner: PartialJoiner | None = None
    # Where the first part of a message still being joined began: a restart reads from there, so
    # the parts already read are not lost (the joiner lives in memory only).
    pending_from: int | None = None
    saved: list[dict[str, Any]] | None = None  # the state last handed to the sink


class LogsModule:
    name = "logs"

    def __init__(self, config: LogsConfig, agent: AgentRef, sink: BatchSink, read_state: StateReader) -> None:
        self.config = config
        self.agent = agent
        self.sink = sink
        self.read_state = read_state
        self.sources: dict[str, Source] = {}
        self.counters = {"lines": 0, "cut": 0, "invalid_bytes": 0, "malformed_container_lines": 0}

    def status(self) -> dict[str, Any]:
        return {"files": len(self.sources), **self.counters,
                "rotations": sum(s.tail.rotations for s in self.sources.values()),
                "truncations": sum(s.tail.truncations for s in self.sources.values())}

    def interrupt(self) -> None:
        """Nothing blocks for long: `run` sees its stop event at the next poll."""

    def run(self, stop: threading.Event) -> None:
        first_start = self.read_state(STARTED_KEY) is None
        if first_start:
            self.sink([], {STARTED_KEY: time.time()})
        self._close_all()
        self._scan(from_end=first_start and self.config.start_at == "end")
        next_scan = time.monotonic() + self.config.rescan_seconds
        try:
            while not stop.is_set():
                if time.monotonic() >= next_scan:
                    self._scan(from_end=False)
                    next_scan = time.monotonic() + self.config.rescan_seconds
                busy = False
                for source in list(self.sources.values()):
                    busy |= self._poll(source)
                    if stop.is_set():
                        break
                if not busy:
                    stop.wait(self.config.poll_seconds)
        finally:
            self._close_all()

    def _close_all(self) -> None:
        for source in self.sources.values():
            source.tail.close()
        self.sources.clear()

    # --- discovery ---
    def _wanted(self) -> dict[str, tuple[str, dict[str, Any] | None]]:
        wanted: dict[str, tuple[str, dict[str, Any] | None]] = {}
        for pattern in self.config.files:
            for path in glob.glob(pattern) if glob.has_magic(pattern) else [pattern]:
                wanted[path] = ("file", None)
        if self.config.docker_containers:
            root = self.config.docker_data_root / "containers"
            for path in glob.glob(f"{glob.escape(str(root))}/*/*-json.log"):
                wanted[path] = ("docker", self._docker_meta(Path(path).parent))
        if self.config.cri_logs:
            for path in glob.glob(f"{glob.escape(str(self.config.cri_dir))}/*.log"):
                wanted[path] = ("cri", self._cri_meta(Path(path)))
        return wanted

    def _docker_meta(self, folder: Path) -> dict[str, Any] | None:
        """What the engine records of the container whose folder (under containers/) this is."""
        try:
            config = orjson.loads((folder / "config.v2.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            config = None
        return docker_identity(folder.name, config)

    def _cri_meta(self, path: Path) -> dict[str, Any] | None:
        meta = cri_identity(path.name)
        if meta is not None:  # with Docker as the runtime (cri-dockerd), the engine knows the image too
            known = self._docker_meta(self.config.docker_data_root / "containers" / meta["container"]["id"])
            if known is not None and "image" in known["container"]:
                meta["container"]["image"] = known["container"]["image"]
        return meta

    def _scan(self, from_end: bool) -> None:
        wanted = self._wanted()
        for path, (kind, meta) in wanted.items():
            source = self.sources.get(path)
            if source is not None:
                source.meta = meta or source.meta
                continue
            saved = TailState.list_from_state(self.read_state(state_key(path)))
            # Container logs are read whole when new; so are files that appear while Vigil runs.
            tail = FileTail(path, self.config.max_line_bytes, saved, from_end and kind == "file")
            joiner = PartialJoiner(self.config.max_line_bytes) if kind != "file" else None
            self.sources[path] = Source(path, kind, tail, meta, joiner)
            if os.path.exists(path):
                log.info("logs: following %s (%s)", path, kind)
            else:
                log.debug("logs: %s does not exist; it is read once it appears", path)
        for path in [p for p, s in self.sources.items() if p not in wanted and s.tail.state() is None]:
            self._forget(self.sources.pop(path))

    def _forget(self, source: Source) -> None:
        """The file is gone for good (a removed container): its last unfinished message goes out as it is."""
        source.tail.close()
        unfinished = source.joiner.flush() if source.joiner is not None else []
        now = time.time()
        events = [self._count(line_event(message, source.path, self.agent, self.config.max_line_bytes, now,
                                         {**(source.meta or {}), "stream": stream}, size))
                  for stream, message, size in unfinished]
        self.sink(events, {state_key(source.path): None})

    # --- reading ---
    def _poll(self, source: Source) -> bool:
        """Hand one poll's lines on with the new offset; True when more may be waiting."""
        lines = source.tail.poll(BATCH_BYTES)
        if not lines:
            # What is known of the files changed without a line (a rotation seen, a young file's
            # first bytes): saved too, so that a restart can still find them.
            state = source.tail.state()
            if state is not None and state != source.saved:
                self.sink([], {state_key(source.path): state})
                source.saved = state
            return False
        now = time.time()
        events = [e for line in lines for e in self._events(source, line, now)]
        state = source.tail.state()
        if state is not None and source.pending_from is not None and state[-1]["offset"] >= source.pending_from:
            state[-1]["offset"] = source.pending_from
        self.sink(events, {state_key(source.path): state} if state is not None else None)
        source.saved = state
        self.counters["lines"] += len(events)
        return sum(len(x.data) for x in lines) >= BATCH_BYTES // 2

    def _events(self, source: Source, line: Line, now: float) -> list[Event]:
        limit = self.config.max_line_bytes
        if source.kind == "file" or line.cut:
            return [self._count(line_event(line.data, source.path, self.agent, limit, now, source.meta, line.size))]
        try:
            parsed: ContainerLine = parse_docker_json(line.data) if source.kind == "docker" else parse_cri(line.data)
        except ValueError as exc:
            self.counters["malformed_container_lines"] += 1
            meta = {**(source.meta or {}), "log": {"format_error": str(exc)}}
            return [self._count(line_event(line.data, source.path, self.agent, limit, now, meta))]
        assert source.joiner is not None
        if source.pending_from is None and parsed.partial:
            source.pending_from = line.start
        joined = source.joiner.add(parsed)
        if joined is None:
            return []
        if not source.joiner.pending:
            source.pending_from = None
        message, size = joined
        meta = {**(source.meta or {}), "stream": parsed.stream}
        return [self._count(line_event(message, source.path, self.agent, limit, parsed.time or now, meta, size))]

    def _count(self, event: Event) -> Event:
        notes = event.data.get("log")
        if notes:
            if notes.get("truncated"):
                self.counters["cut"] += 1
            if notes.get("invalid_bytes"):
                self.counters["invalid_bytes"] += 1
        return event

