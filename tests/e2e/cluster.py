"""A manager and its agents as separate processes on loopback, and a TCP relay that can cut one link.

`ManagerProcess` runs `python -m vigil manager` on ports chosen once, up front, so a manager that
is restarted (or killed and started again) listens where its agents expect it. `AgentProcess`
enrolls through the real CLI (`vigil agent enroll`) and runs `vigil agent run` against one dockerd.
`Relay` sits between one agent and the manager: `cut()` blackholes the connections it carries and
refuses new ones, `heal()` lets traffic through again. Every process here is stopped by its PID.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import orjson
import yaml

from .vigil_proc import Alert, read_alerts

LOG_TAIL_CHARS = 6000


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that were free a moment ago (all held open while picking)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _now() -> str:
    """Wall-clock time as the processes' own log lines show it, to line the two up."""
    return time.strftime("%Y-%m-%d %H:%M:%S") + f",{int(time.time() * 1000) % 1000:03d}"


def _tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return text[-chars:]


class _Process:
    """A `python -m vigil ...` child with its output appended to a log file."""

    what = "vigil"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir / "process.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def log(self) -> str:
        return _tail(self.log_path)

    def _spawn(self, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            log.write(f"\n===== {_now()} start {self.starts + 1}: {' '.join(args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vigil", *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        self.starts += 1
        atexit.register(self.stop)  # a crashed test run must not leave our children behind
        return self.proc

    def _wait_file(self, path: Path, timeout: float) -> dict[str, Any]:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.what} exited with {self.proc.returncode} during start:\n{self.log()}")
            with contextlib.suppress(FileNotFoundError, orjson.JSONDecodeError):
                info: dict[str, Any] = orjson.loads(path.read_bytes())
                if info.get("pid") == self.proc.pid:
                    return info
            time.sleep(0.05)
        raise RuntimeError(f"{self.what} did not start within {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Signal our own child (by PID) and reap it; SIGKILL if it does not leave in time. Idempotent."""
        if self.proc is None:
            return
        atexit.unregister(self.stop)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(5)
        with self.log_path.open("ab") as log:
            log.write(f"===== {_now()} {self.what} pid {self.proc.pid} ended with {self.proc.returncode}\n".encode())
        self.proc = None  # reaped: nothing of ours runs under that PID any more

    def kill(self) -> None:
        """SIGKILL: no chance to flush or say goodbye."""
        self.stop(signal.SIGKILL)

    def __enter__(self) -> Self:
        self.start()  # type: ignore[attr-defined]
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class ManagerProcess(_Process):
    """`vigil manager` on 127.0.0.1 with fixed enrollment, channel and API ports, keepalive 1 s, no folding."""

    what = "vigil manager"

    def __init__(self, data_dir: Path, config: dict[str, Any] | None = None, keepalive_seconds: float = 1.0) -> None:
        super().__init__(data_dir)
        self.enrollment_port, self.channel_port, self.api_port = free_ports(3)
        self.keepalive_seconds = keepalive_seconds
        self.config: dict[str, Any] = {
            "data_dir": str(data_dir),
            "manager": {
                "name": "vigil-test-manager",
                "listen_host": "127.0.0.1",
                "channel_port": self.channel_port,
                "enrollment_port": self.enrollment_port,
                "server_names": ["127.0.0.1", "localhost"],
                "keepalive_seconds": keepalive_seconds,
            },
            "api": {"host": "127.0.0.1", "port": self.api_port},
            "analysis": {"fold_window_seconds": 0},
            **(config or {}),
        }
        self.config_path = data_dir / "manager.yml"
        self.run_info: dict[str, Any] = {}

    @property
    def alerts_path(self) -> Path:
        return self.data_dir / "alerts.json"

    @property
    def secret_path(self) -> Path:
        return self.data_dir / "enrollment.secret"

    @property
    def pin(self) -> str:
        return str(self.run_info["pin"])

    @property
    def enrollment_address(self) -> str:
        return f"127.0.0.1:{self.enrollment_port}"

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config))
        self._spawn(["manager", "--config", str(self.config_path)])
        self.run_info = self._wait_file(self.data_dir / "run.json", timeout)
        assert self.run_info["channel_port"] == self.channel_port, self.run_info
        assert self.run_info["enrollment_port"] == self.enrollment_port, self.run_info

    def restart(self) -> None:
        self.stop()
        self.start()

    # ---- what a user reads -------------------------------------------------------------------
    def alerts(self) -> list[Alert]:
        return read_alerts(self.alerts_path)

    def wait_for(self, predicate: Callable[[Alert], bool], timeout: float = 15.0, what: str = "alert") -> Alert:
        """The first alert in alerts.json that satisfies `predicate`, polling until `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            for alert in self.alerts():
                if predicate(alert):
                    return alert
            if time.monotonic() > deadline:
                seen = [(a["rule"]["id"], a["rule"]["description"]) for a in self.alerts()[-30:]]
                raise AssertionError(f"no {what} within {timeout} s; last alerts: {seen}\nmanager log:\n{self.log()}")
            time.sleep(0.05)

    def registry(self) -> list[dict[str, Any]]:
        """The enrolled agents as the manager's registry (agents.db) holds them, read-only."""
        uri = f"file:{self.data_dir / 'agents.db'}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute("SELECT * FROM agents ORDER BY id")]

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """`vigil ARGS --config <this manager's config>` on the manager's host."""
        return subprocess.run(
            [sys.executable, "-m", "vigil", *args, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )


class AgentProcess(_Process):
    """`vigil agent run` for one dockerd, enrolled with `manager` through the real CLI."""

    what = "vigil agent"

    def __init__(
        self, data_dir: Path, name: str, docker_host: str, manager: ManagerProcess, manager_port: int | None = None
    ) -> None:
        super().__init__(data_dir)
        self.name = name
        self.docker_host = docker_host
        self.manager = manager
        self.config_path = data_dir / "agent.yml"
        self.config: dict[str, Any] = {
            "data_dir": str(data_dir),
            "agent": {
                "name": name,
                "manager_host": "127.0.0.1",
                "manager_port": manager_port or manager.channel_port,
                "reconnect_min_seconds": 0.2,
                "reconnect_max_seconds": 1.0,
            },
            "docker": {"host": docker_host, "reconnect_min_seconds": 0.2, "reconnect_max_seconds": 1.0},
            "api": {"enabled": False},
            "logs": {"enabled": False},
        }
        self.agent_id: str | None = None

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / "outbox.db"

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config))

    def enroll(self) -> str:
        """`vigil agent enroll` with the manager's pin and secret file; returns the agent id it got."""
        self.write_config()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "vigil",
                "agent",
                "enroll",
                "--manager",
                self.manager.enrollment_address,
                "--pin",
                self.manager.pin,
                "--secret-file",
                str(self.manager.secret_path),
                "--name",
                self.name,
                "--config",
                str(self.config_path),
                "--data-dir",
                str(self.data_dir),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        with self.log_path.open("a") as log:
            log.write(f"===== {_now()} enroll (exit {done.returncode})\n{done.stdout}{done.stderr}")
        if done.returncode != 0:
            raise RuntimeError(
                f"enrollment of {self.name} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n"
                f"manager log:\n{self.manager.log()}"
            )
        identity = orjson.loads((self.data_dir / "identity" / "identity.json").read_bytes())
        self.agent_id = str(identity["agent_id"])
        return self.agent_id

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        self.write_config()
        self._spawn(["agent", "run", "--config", str(self.config_path)], env={"DOCKER_HOST": self.docker_host})
        info = self._wait_file(self.data_dir / "agent-run.json", timeout)
        assert info["agent_id"] == self.agent_id, info

    def restart(self) -> None:
        self.stop()
        self.start()

    def outbox_depth(self) -> int:
        """Events in the agent's outbox that the manager has not acknowledged yet."""
        uri = f"file:{self.outbox_path}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
            depth: int = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            return depth


UP, DOWN = "up", "down"  # agent -> manager, manager -> agent


class _Pair:
    """One relayed connection: the agent's socket and ours to the manager."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.blackholed: set[str] = set()  # directions whose bytes are swallowed
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()
        for s in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                s.close()


class Relay:
    """A TCP relay on 127.0.0.1 in front of the manager's channel, for one agent.

    `cut()` stops forwarding: connections already open stay open but everything sent on them is
    swallowed and a close is not passed on (a blackhole, as when a network path dies), and new
    connections are accepted and closed at once. `cut(DOWN)` swallows only what the manager sends
    (its acknowledgements are lost, the agent's batches still arrive). `heal()` drops the cut
    connections and forwards new ones again.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port: int = self._listener.getsockname()[1]
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.accepted = 0
        self.refused = 0
        self._spawn(self._accept_loop, "relay-accept")

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    @property
    def is_cut(self) -> bool:
        return self._cut.is_set()

    def cut(self, *directions: str) -> None:
        """Blackhole the open connections in `directions` (default both) and refuse new ones."""
        with self._lock:
            self._cut.set()
            for pair in self._pairs:
                pair.blackholed.update(directions or (UP, DOWN))

    def heal(self) -> None:
        with self._lock:
            dead = [p for p in self._pairs if p.blackholed]
            self._pairs = [p for p in self._pairs if not p.blackholed]
            self._cut.clear()
        for pair in dead:
            pair.close()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
            threads = list(self._threads)
        for pair in pairs:
            pair.close()
        for thread in threads:
            thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._listener], [], [], 0.1)
                if not ready:
                    continue
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()  # the manager is down: the agent sees its connection closed
                continue
            self.accepted += 1
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
            self._spawn(self._pump, "relay-up", pair, UP, client, upstream)
            self._spawn(self._pump, "relay-down", pair, DOWN, upstream, client)

    def _pump(self, pair: _Pair, direction: str, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.1)
        while not self._stop.is_set() and not pair.closed.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if direction in pair.blackholed:
                if not data:  # this end gave up; the other is not told, as in a real blackhole
                    with contextlib.suppress(OSError):
                        src.close()
                    return
                continue  # swallowed
            if not data:
                pair.close()
                with self._lock:
                    if pair in self._pairs:
                        self._pairs.remove(pair)
                return
            try:
                dst.sendall(data)
            except OSError:
                pair.close()
                return
