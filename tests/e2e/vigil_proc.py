"""Runs `vigil up` as a real process for end-to-end tests, and reads what a user would read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import httpx
import orjson
import yaml

Alert = dict[str, Any]


def read_alerts(path: Path) -> list[Alert]:
    """Every alert in an alerts.json; a last line still being written is left for the next read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    complete, partial = lines[:-1], lines[-1]
    alerts = []
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            alerts.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise AssertionError(f"{path}:{number} is not one JSON alert ({exc}): {line[:300]!r}") from None
    del partial  # no newline yet: the writer has not finished it
    return alerts


class VigilProcess:
    """`python -m vigil up` on a private data dir and a free API port, pointed at one dockerd."""

    def __init__(self, data_dir: Path, docker_host: str, config: dict[str, Any] | None = None) -> None:
        self.data_dir = data_dir
        self.docker_host = docker_host
        # The host's own logs are not this test's business unless it asks for them.
        self.config = {"docker": {"reconnect_min_seconds": 0.2, "reconnect_max_seconds": 1.0},
                       "logs": {"enabled": False}, **(config or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.api: str | None = None
        self.log_path = data_dir / "vigil.log"

    @property
    def alerts_path(self) -> Path:
        return self.data_dir / "alerts.json"

    def start(self, timeout: float = 20.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.data_dir / "config.yml"
        config_path.write_text(yaml.safe_dump({**self.config, "data_dir": str(self.data_dir)}))
        run_file = self.data_dir / "run.json"
        run_file.unlink(missing_ok=True)
        env = {**os.environ, "DOCKER_HOST": self.docker_host}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vigil", "up", "--config", str(config_path), "--port", "0"],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vigil up exited with {self.proc.returncode}:\n{self.log()}")
            if run_file.exists():
                self.api = orjson.loads(run_file.read_bytes())["api"]
                return
            time.sleep(0.05)
        raise RuntimeError(f"vigil up did not start within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ---- what a user reads ---------------------------------------------------------------------
    def file_alerts(self) -> list[Alert]:
        return read_alerts(self.alerts_path)

    def headers(self) -> dict[str, str]:
        """The admin key `vigil up` wrote on its first start, as the local CLI sends it."""
        return {"Authorization": f"Bearer {(self.data_dir / 'api' / 'admin.key').read_text().strip()}"}

    def api_alerts(self, **params: Any) -> list[Alert]:
        assert self.api is not None
        response = httpx.get(f"{self.api}/alerts", params={"limit": 1000, "order": "asc", **params},
                             headers=self.headers(), timeout=5)
        response.raise_for_status()
        items: list[Alert] = response.json()["items"]
        return items

    def health(self) -> dict[str, Any]:
        assert self.api is not None
        result: dict[str, Any] = httpx.get(f"{self.api}/health", headers=self.headers(), timeout=5).json()
        return result

    def wait_for(self, predicate: Callable[[Alert], bool], timeout: float = 2.0, since: int = 0) -> Alert:
        """The first alert in alerts.json (from line `since`) that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        while True:
            for alert in self.file_alerts()[since:]:
                if predicate(alert):
                    return alert
            if time.monotonic() > deadline:
                seen = [(a["rule"]["id"], a["rule"]["description"]) for a in self.file_alerts()[since:]]
                raise AssertionError(f"no matching alert within {timeout} s; alerts since line {since}: {seen}")
            time.sleep(0.02)


def rule_is(rule_id: int, container: str | None = None) -> Callable[[Alert], bool]:
    """Predicate: the alert is for rule `rule_id` (and names `container` in its description)."""

    def check(alert: Alert) -> bool:
        if alert["rule"]["id"] != str(rule_id):
            return False
        return container is None or container in alert["rule"]["description"]

    return check
