"""Hostile input from the engine's event stream: each piece gets a clear alert, the rest keeps running."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from .fake_engine import FakeEngine
from .vigil_proc import VigilProcess


def event(kind: str, action: str, name: str, nano: int, **attrs: str) -> bytes:
    body = {"Type": kind, "Action": action, "Actor": {"ID": "f" * 64, "Attributes": {"name": name, **attrs}},
            "scope": "local", "time": nano // 10**9, "timeNano": nano}
    return json.dumps(body).encode()


def test_malformed_events_alert_and_the_stream_goes_on(tmp_path: Path) -> None:
    now = time.time_ns()
    lines = [
        b'{"Type": "container", "Action": "create", "Actor": {"ID": "abc", "Attri',  # truncated
        b"[1, 2, 3]",  # JSON, but not an event
        b'{"Type": "container", "Actor": {}}',  # no Action
        event("frobnicator", "explode", "weird", now),  # unknown Type/Action: understood, no rule
        event("container", "create", "huge", now + 1, blob="x" * (5 * 1024 * 1024)),  # 5 MB
        b'{"Type": "container", "Action": "cr\xff\xfeate"}',  # invalid UTF-8
        event("container", "create", "survivor", now + 2),
    ]
    sock = Path(tempfile.mkdtemp(prefix="fe", dir="/tmp")) / "engine.sock"
    with FakeEngine(sock, lines) as engine, VigilProcess(tmp_path / "vigil", engine.host) as vigil:
        survivor = vigil.wait_for(lambda a: a["rule"]["id"] == "87901", timeout=10)
        assert survivor["rule"]["description"] == "Docker: Container survivor created"
        assert survivor["data"]["container"]["inspect_error"]  # the fake engine has no such container
        malformed = [a for a in vigil.file_alerts() if a["rule"]["id"] == "200001"]
        errors = [a["data"]["vigil"]["error"] for a in malformed]
        assert len(malformed) == 5, errors
        assert any("not valid JSON" in e for e in errors)
        assert any("must be a JSON object" in e for e in errors)
        assert any("no Type/Action" in e for e in errors)
        assert any("larger than the 1048576-byte limit" in e for e in errors)
        assert all(a["rule"]["level"] == 5 for a in malformed)
        assert all(len(a["full_log"]) <= 512 for a in malformed)
        health = vigil.health()
        assert health["modules"]["docker"]["malformed"] == 5
        assert health["modules"]["docker"]["events"] == 2  # the unknown kind and the survivor
        assert health["matched_below_alert_level"] >= 1  # the unknown kind matched only rule 87900 (level 0)
        assert vigil.proc is not None and vigil.proc.poll() is None
