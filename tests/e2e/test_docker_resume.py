"""Nothing lost, nothing twice: restarts of dockerd and of Vigil in the middle of a stream of actions."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from .daemons import Dockerd, build_busybox_image
from .vigil_proc import VigilProcess

NO_FOLD = {"analysis": {"fold_window_seconds": 0}}


def create(d: Dockerd, *names: str) -> None:
    for name in names:
        d.cli("create", "--network", "none", "--name", name, "vigil-test:1", "true")


def created_counts(vigil: VigilProcess) -> Counter[str]:
    return Counter(
        a["data"]["docker"]["Actor"]["Attributes"]["name"] for a in vigil.file_alerts() if a["rule"]["id"] == "87901"
    )


def wait_created(vigil: VigilProcess, names: list[str], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not set(names) <= set(created_counts(vigil)):
        assert time.monotonic() < deadline, f"missing {set(names) - set(created_counts(vigil))}:\n{vigil.log()}"
        time.sleep(0.05)


def test_restarts_of_dockerd_and_vigil_lose_nothing(fresh_dockerd: Dockerd, tmp_path: Path) -> None:
    d = fresh_dockerd
    build_busybox_image(d)
    vigil = VigilProcess(tmp_path / "vigil", d.host, NO_FOLD)
    vigil.start()
    try:
        expected: list[str] = []
        batch = [f"a{i}" for i in range(5)]
        create(d, *batch)
        expected += batch
        wait_created(vigil, expected)

        d.stop()  # the engine goes away under Vigil...
        time.sleep(1.5)
        assert vigil.health()["modules"]["docker"]["connected"] is False
        d.start()  # ...and comes back
        batch = [f"b{i}" for i in range(5)]
        create(d, *batch)
        expected += batch
        wait_created(vigil, expected)
        vigil.wait_for(lambda a: a["rule"]["id"] == "200002", timeout=5)

        vigil.stop()  # Vigil stops cleanly; the engine keeps working
        batch = [f"c{i}" for i in range(5)]
        create(d, *batch)
        expected += batch
        vigil.start()
        wait_created(vigil, expected)

        create(d, "d0")
        expected.append("d0")
        wait_created(vigil, expected)
        vigil.kill()  # SIGKILL: no chance to flush anything
        batch = [f"e{i}" for i in range(5)]
        create(d, *batch)
        expected += batch
        vigil.start()
        wait_created(vigil, expected)

        time.sleep(1.0)  # anything replayed twice would show up by now
        counts = created_counts(vigil)
        assert {name: counts[name] for name in expected} == dict.fromkeys(expected, 1)
        api_names = Counter(a["data"]["docker"]["Actor"]["Attributes"]["name"] for a in vigil.api_alerts(rule_id=87901))
        assert {name: api_names[name] for name in expected} == dict.fromkeys(expected, 1)
        log = vigil.log()
        assert log.count("Docker engine not reachable") == 1, log
        assert log.count("reconnected to") == 1, log
    finally:
        vigil.stop()


def test_starts_without_engine_and_connects_when_it_appears(fresh_dockerd: Dockerd, tmp_path: Path) -> None:
    d = fresh_dockerd
    build_busybox_image(d)
    d.stop()
    with VigilProcess(tmp_path / "vigil", d.host, NO_FOLD) as vigil:
        time.sleep(2.0)
        lines = [line for line in vigil.log().splitlines() if "not reachable" in line]
        assert len(lines) == 1, vigil.log()
        assert d.host in lines[0] and "keeps running" in lines[0]
        assert vigil.health()["status"] == "ok"
        d.start()
        create(d, "late")
        wait_created(vigil, ["late"])


def test_events_beyond_the_engine_buffer_raise_a_loss_alert(fresh_dockerd: Dockerd, tmp_path: Path) -> None:
    """dockerd keeps its last 256 events; more than that while Vigil is down is a gap, and is said."""
    d = fresh_dockerd
    vigil = VigilProcess(tmp_path / "vigil", d.host, NO_FOLD)
    vigil.start()
    try:
        client = d.client()
        client.volumes.create("before")
        vigil.wait_for(lambda a: a["rule"]["id"] == "87913" and a["data"]["docker"]["Actor"]["ID"] == "before")
        vigil.stop()
        for i in range(300):
            client.volumes.create(f"gap{i}")
        vigil.start()
        lost = vigil.wait_for(lambda a: a["rule"]["id"] == "200003", timeout=10)
        assert lost["rule"]["level"] == 7
        assert "keeps only its last 256 events" in lost["rule"]["description"]
        newest = vigil.wait_for(lambda a: a["data"].get("docker", {}).get("Actor", {}).get("ID") == "gap299")
        assert newest["rule"]["id"] == "87913"
    finally:
        vigil.stop()


def test_a_short_outage_is_not_reported_as_a_gap(fresh_dockerd: Dockerd, tmp_path: Path) -> None:
    d = fresh_dockerd
    with VigilProcess(tmp_path / "vigil", d.host, NO_FOLD) as vigil:
        client = d.client()
        client.volumes.create("one")
        vigil.wait_for(lambda a: a["data"].get("docker", {}).get("Actor", {}).get("ID") == "one")
        vigil.stop()
        for i in range(20):
            client.volumes.create(f"short{i}")
        vigil.start()
        vigil.wait_for(lambda a: a["data"].get("docker", {}).get("Actor", {}).get("ID") == "short19")
        assert not [a for a in vigil.file_alerts() if a["rule"]["id"] == "200003"]
