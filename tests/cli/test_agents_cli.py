"""`vigil manager`, `vigil agents ...` and `vigil agent enroll|status|run` as a user types them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml


def vigil(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vigil", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


class RunningManager:
    def __init__(self, data: Path) -> None:
        self.data = data
        config = {"data_dir": str(data), "analysis": {"fold_window_seconds": 0},
                  "manager": {"listen_host": "127.0.0.1", "channel_port": 0, "enrollment_port": 0,
                              "server_names": ["127.0.0.1"]},
                  "api": {"port": 0}}
        data.mkdir(parents=True)
        self.config = data / "manager.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = (data / "manager.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "vigil", "manager", "--config", str(self.config)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not (data / "run.json").exists():
            assert self.proc.poll() is None, (data / "manager.log").read_text()
            assert time.monotonic() < deadline, "vigil manager did not start"
            time.sleep(0.05)
        self.run = orjson.loads((data / "run.json").read_bytes())

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return vigil(*args, "--config", str(self.config))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)
        self.log.close()


@pytest.fixture()
def manager(tmp_path: Path) -> Iterator[RunningManager]:
    m = RunningManager(tmp_path / "manager")
    yield m
    m.stop()


def enroll(manager: RunningManager, agent_dir: Path, *extra: str, pin: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    return vigil("agent", "enroll", "--manager", f"127.0.0.1:{manager.run['enrollment_port']}",
                 "--pin", pin or manager.run["pin"], "--data-dir", str(agent_dir), *extra)


def test_a_token_enrolls_an_agent_that_the_manager_then_lists_shows_and_removes(manager: RunningManager,
                                                                                tmp_path: Path) -> None:
    pin = manager.cli("agents", "pin")
    assert pin.returncode == 0 and pin.stdout.strip() == manager.run["pin"]
    added = manager.cli("agents", "add", "node-7", "--ttl", "10m")
    assert added.returncode == 0, added.stderr
    token = added.stdout.split("token: ", 1)[1].split()[0]
    assert f"--pin {manager.run['pin']} --token {token}" in added.stdout

    agent_dir = tmp_path / "agent"
    joined = enroll(manager, agent_dir, "--token", token, "--name", "node-7")
    assert joined.returncode == 0, joined.stderr
    assert "agent node-7 enrolled as 001" in joined.stdout
    again = enroll(manager, tmp_path / "other", "--token", token, "--name", "node-7")
    assert again.returncode == 2 and "already used" in again.stderr

    status = vigil("agent", "status", "--data-dir", str(agent_dir), "--json")
    assert orjson.loads(status.stdout) == {"agent_id": "001", "name": "node-7", "manager": "127.0.0.1",
                                                "running": False, "outbox_depth": 0,
                                                "outbox_max_events": 1_000_000, "dropped_total": 0}
    listed = orjson.loads(manager.cli("agents", "list", "--json").stdout)
    assert [(a["id"], a["name"], a["status"]) for a in listed] == [("001", "node-7", "never_connected")]
    shown = manager.cli("agents", "show", "node-7")
    assert "status: never_connected" in shown.stdout and "enrollments: 1" in shown.stdout

    ping = manager.cli("agents", "ping", "node-7")
    assert ping.returncode == 1 and "not connected" in ping.stderr
    assert manager.cli("agents", "remove", "001").returncode == 0
    assert "status: removed" in manager.cli("agents", "show", "001").stdout
    missing = manager.cli("agents", "remove", "nobody")
    assert missing.returncode == 1 and "nobody" in missing.stderr


def test_a_secret_file_enrolls_and_a_wrong_pin_or_secret_is_refused(manager: RunningManager, tmp_path: Path) -> None:
    secret = manager.data / "enrollment.secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    wrong_pin = enroll(manager, tmp_path / "a", "--secret-file", str(secret), pin="sha256:" + "0" * 64)
    assert wrong_pin.returncode == 2 and "does not match the pin" in wrong_pin.stderr
    bad = tmp_path / "bad.secret"
    bad.write_text("guess\n")
    wrong_secret = enroll(manager, tmp_path / "b", "--secret-file", str(bad), "--name", "node-b")
    assert wrong_secret.returncode == 2 and "wrong enrollment secret" in wrong_secret.stderr
    good = enroll(manager, tmp_path / "c", "--secret-file", str(secret), "--name", "node-c")
    assert good.returncode == 0 and "enrolled as 001" in good.stdout
    # Rotating the secret file takes effect at the next enrollment, without a restart.
    old_copy = tmp_path / "old.secret"
    old_copy.write_text(secret.read_text())
    secret.write_text("rotated-secret\n")
    old = enroll(manager, tmp_path / "d", "--secret-file", str(old_copy), "--name", "node-d")
    assert old.returncode == 2 and "wrong enrollment secret" in old.stderr
    rotated = vigil("agent", "enroll", "--manager", f"127.0.0.1:{manager.run['enrollment_port']}",
                    "--pin", manager.run["pin"], "--data-dir", str(tmp_path / "e"), "--name", "node-e",
                    env={"VIGIL_ENROLL_SECRET": "rotated-secret"})
    assert rotated.returncode == 0, rotated.stderr


def test_an_agent_that_never_enrolled_says_how_to(tmp_path: Path) -> None:
    result = vigil("agent", "run", "--data-dir", str(tmp_path / "agent"))
    assert result.returncode == 2
    assert "not enrolled" in result.stderr and "vigil agent enroll" in result.stderr
