"""The agent's outbox on a real SQLite file: order, durability across reopen, the bound and its report."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from vigil.agent.outbox import Outbox
from vigil.event import AgentRef, Event

AGENT = AgentRef("001", "node-1")


def event(n: int) -> Event:
    return Event(module="docker", location="docker", timestamp=1.0 + n, decoder="docker", agent=AGENT,
                 data={"docker": {"n": n}})


def numbers(bodies: list[bytes]) -> list[int]:
    return [orjson.loads(b)["data"]["docker"]["n"] for b in bodies]


def test_events_come_out_in_order_with_growing_sequence_numbers(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", 100)
    for n in range(5):
        assert box.put(event(n))
    pending = box.pending(0, 3, 1 << 20)
    assert pending is not None and pending.first == 1 and numbers(pending.bodies) == [0, 1, 2]
    rest = box.pending(pending.last, 10, 1 << 20)
    assert rest is not None and rest.first == 4 and numbers(rest.bodies) == [3, 4]
    assert box.pending(rest.last, 10, 1 << 20) is None


def test_a_batch_stops_at_the_byte_limit_but_holds_at_least_one_event(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", 100)
    for n in range(3):
        box.put(event(n))
    pending = box.pending(0, 10, 1)
    assert pending is not None and len(pending.bodies) == 1


def test_acknowledged_events_are_forgotten_and_numbers_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path, 100)
    for n in range(3):
        box.put(event(n))
    box.acknowledge(3)
    assert box.depth == 0 and not box.has_events.is_set()
    box.put(event(3))
    pending = box.pending(3, 10, 1 << 20)
    assert pending is not None and pending.first == 4  # not 1 again: the manager would take it for a replay
    box.close()


def test_unacknowledged_events_stream_and_module_state_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path, 100)
    stream = box.stream
    box.put(event(0), {"docker.checkpoint": {"since": 41}})
    box.put(event(1), {"docker.checkpoint": {"since": 42}})
    box.acknowledge(1)
    box.close()
    again = Outbox(path, 100)
    assert again.stream == stream
    assert again.depth == 1 and again.has_events.is_set()
    assert again.state("docker.checkpoint") == {"since": 42}
    pending = again.pending(0, 10, 1 << 20)
    assert pending is not None and pending.first == 2 and numbers(pending.bodies) == [1]


def test_a_new_outbox_starts_a_new_stream(tmp_path: Path) -> None:
    assert Outbox(tmp_path / "a.db", 10).stream != Outbox(tmp_path / "b.db", 10).stream


def test_a_full_outbox_refuses_counts_and_reports_once_there_is_room(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path, 100)
    for n in range(100):
        assert box.put(event(n))
    assert not box.put(event(100)) and not box.put(event(101), {"docker.checkpoint": {"since": 7}})
    assert box.dropped == 2 and box.dropped_total == 2
    assert box.state("docker.checkpoint") == {"since": 7}  # the module moves on; the loss is on record

    def report(count: int) -> Event:
        return Event(module="vigil", location="outbox", timestamp=time.time(), decoder="vigil", agent=AGENT,
                     data={"vigil": {"kind": "events_dropped", "module": "outbox", "count": count}})

    assert box.report_drops(report) == 0  # still full: nothing to report into
    box.close()
    box = Outbox(path, 100)  # the count is on disk, not only in memory
    assert box.dropped == 2
    box.acknowledge(50)
    assert box.report_drops(report) == 2
    assert box.dropped == 0 and box.dropped_total == 2
    pending = box.pending(100, 10, 1 << 20)
    assert pending is not None
    assert orjson.loads(pending.bodies[-1])["data"]["vigil"] == {"kind": "events_dropped", "module": "outbox",
                                                                 "count": 2}
