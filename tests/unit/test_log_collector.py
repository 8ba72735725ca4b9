"""The logs module as a user runs it: globs, restarts, container trees, bad input, and the alerts."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from vigil.agent.modules.logs.collector import LogsModule
from vigil.config import LogsConfig
from vigil.event import AgentRef, Event

from .support import analyzer

CID = "9f" * 32
ATTACK = ('203.0.113.9 - - [27/Nov/2026:08:00:00 +0000] "GET /item.php?id=1%20UNION%20SELECT%20password%20FROM%20users'
          ' HTTP/1.1" 200 512 "-" "Mozilla/5.0"')


class DurableSink:
    """What the outbox does for the module: events and state kept together."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.state: dict[str, Any] = {}
        self.lock = threading.Lock()

    def __call__(self, events: list[Event], state: dict[str, Any] | None) -> None:
        with self.lock:
            self.events.extend(events)
            self.state.update(state or {})

    def raws(self) -> list[str]:
        with self.lock:
            return [e.raw or "" for e in self.events]


def config(**options: Any) -> LogsConfig:
    base: dict[str, Any] = {"files": [], "docker_containers": False, "cri_logs": False, "journal": "off",
                            "poll_seconds": 0.05, "rescan_seconds": 0.1}
    return LogsConfig.model_validate({**base, **options})


@contextmanager
def running(cfg: LogsConfig, sink: DurableSink) -> Iterator[LogsModule]:
    module = LogsModule(cfg, AgentRef("001", "node-1"), sink, sink.state.get)
    stop = threading.Event()
    thread = threading.Thread(target=module.run, args=(stop,))
    thread.start()
    try:
        yield module
    finally:
        stop.set()
        thread.join(5)
        assert not thread.is_alive()


def wait(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_glob_picks_up_new_files_and_a_restart_neither_repeats_nor_misses(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("before start\n")
    sink = DurableSink()
    cfg = config(files=[str(tmp_path / "*.log")])
    with running(cfg, sink) as module:
        wait(lambda: module.status()["files"] == 1)
        with (tmp_path / "a.log").open("a") as f:
            f.write("a1\n")
        (tmp_path / "b.log").write_text("b1\nb2\n")  # appears while running: read whole
        wait(lambda: len(sink.raws()) == 3)
    with (tmp_path / "a.log").open("a") as f:
        f.write("a2 while down\n")
    (tmp_path / "c.log").write_text("c1 while down\n")
    with running(cfg, sink):
        wait(lambda: len(sink.raws()) == 5)
        time.sleep(0.3)
    assert sorted(sink.raws()) == ["a1", "a2 while down", "b1", "b2", "c1 while down"]
    assert {e.location for e in sink.events} == {str(tmp_path / n) for n in ("a.log", "b.log", "c.log")}


def test_docker_json_file_lines_carry_the_container_and_raise_web_attack_alerts(tmp_path: Path) -> None:
    folder = tmp_path / "containers" / CID
    folder.mkdir(parents=True)
    (folder / "config.v2.json").write_bytes(orjson.dumps({"Name": "/shop-web", "Config": {"Image": "nginx:1.27"}}))
    entries = [{"log": ATTACK[:40], "stream": "stdout", "time": "2026-11-27T08:00:00.1Z"},  # a part: no newline
               {"log": ATTACK[40:] + "\n", "stream": "stdout", "time": "2026-11-27T08:00:00.1Z"}]
    (folder / f"{CID}-json.log").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in entries))
    sink = DurableSink()
    with running(config(docker_containers=True, docker_data_root=str(tmp_path)), sink):
        wait(lambda: len(sink.events) == 1)
    event = sink.events[0]
    assert event.raw == ATTACK
    assert event.data["container"] == {"id": CID, "name": "shop-web", "image": "nginx:1.27"}
    alert = analyzer().analyse(event).alert
    assert alert is not None and alert["rule"]["id"] == "31106", alert  # a web attack that returned 200
    assert alert["data"]["container"]["name"] == "shop-web"
    assert alert["data"]["srcip"] == "203.0.113.9"


def test_cri_tree_with_partial_lines_through_symlinks(tmp_path: Path) -> None:
    pods = tmp_path / "pods" / "shop_web-1_5d2c" / "nginx"
    pods.mkdir(parents=True)
    target = pods / "0.log"
    half = len(ATTACK) // 2
    target.write_text(f"2026-11-27T08:00:00.000000001Z stdout P {ATTACK[:half]}\n"
                      "2026-11-27T08:00:00.000000002Z stderr F worker started\n"
                      f"2026-11-27T08:00:00.000000003Z stdout F {ATTACK[half:]}\n")
    links = tmp_path / "containers"
    links.mkdir()
    os.symlink(target, links / f"web-1_shop_nginx-{CID}.log")
    sink = DurableSink()
    with running(config(cri_logs=True, cri_dir=str(links), docker_data_root=str(tmp_path / "none")), sink):
        wait(lambda: len(sink.events) == 2)
    assert [(e.raw, e.data["stream"]) for e in sink.events] == [("worker started", "stderr"), (ATTACK, "stdout")]
    assert sink.events[1].data["kubernetes"] == {"pod": "web-1", "namespace": "shop", "container": "nginx"}
    alert = analyzer().analyse(sink.events[1]).alert
    assert alert is not None and alert["rule"]["id"] == "31106"


def test_bad_input_is_cut_marked_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b"x" * (10 * 1024 * 1024) + b"\n" + b"caf\xe9 \xff\xfe ok\n" + b"nul\x00in the middle\n"
                     + b"<13>Nov 27 08:0\n")
    sink = DurableSink()
    with running(config(files=[str(path)], start_at="beginning", max_line_bytes=4096), sink) as module:
        wait(lambda: len(sink.events) == 4)
        assert module.status()["cut"] == 1 and module.status()["invalid_bytes"] == 2
    long, latin, nul, header = sink.events
    assert long.data["log"] == {"truncated": True, "original_bytes": 10 * 1024 * 1024}
    assert long.raw is not None and long.raw.startswith("x" * 4096) and "line cut at 4096 bytes" in long.raw
    assert latin.raw == "caf\ufffd \ufffd\ufffd ok" and latin.data["log"] == {"invalid_bytes": True}
    assert nul.raw == "nul\ufffdin the middle"
    assert header.raw == "<13>Nov 27 08:0" and "log" not in header.data
    for event in sink.events:
        analyzer().analyse(event)  # analysable, whatever its alert


def test_malformed_container_lines_are_kept_as_text(tmp_path: Path) -> None:
    folder = tmp_path / "containers" / CID
    folder.mkdir(parents=True)
    (folder / f"{CID}-json.log").write_bytes(b'{"log": "fine\\n", "stream": "stdout"}\nnot json at all\n')
    sink = DurableSink()
    with running(config(docker_containers=True, docker_data_root=str(tmp_path)), sink) as module:
        wait(lambda: len(sink.events) == 2)
        assert module.status()["malformed_container_lines"] == 1
    assert sink.events[1].raw == "not json at all"
    assert "json-file" in sink.events[1].data["log"]["format_error"]
