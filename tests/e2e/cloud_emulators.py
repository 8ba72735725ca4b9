"""moto_server (CloudWatch Logs) and the Google Pub/Sub emulator, started on loopback for the cloud tests.

Each is a real server process in its own session, stopped by its PID (process group) when the `with`
block ends. When the binary is missing the test is skipped with the way to install it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import pytest

from vigil.event import Event

from .daemons import DaemonError, free_port, log_tail

REPO = Path(__file__).resolve().parents[2]
MOTO_SERVER = REPO / ".venv" / "bin" / "moto_server"
PUBSUB_EMULATOR = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class _Server:
    """A server process with its log in a temp dir; `ready()` says when it answers."""

    label = "server"

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="vigil-cloud-"))
        self.log = self.dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def __enter__(self) -> Self:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.dir)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise DaemonError(f"{self.label} did not start on port {self.port}:\n{log_tail(self.log)}")
            time.sleep(0.1)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM to the process group this server leads (its PID), SIGKILL if it lingers."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def _port_open(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0


class MotoServer(_Server):
    """moto's server mode: AWS APIs (CloudWatch Logs here) over HTTP on 127.0.0.1."""

    label = "moto_server"

    def __init__(self) -> None:
        if not os.access(MOTO_SERVER, os.X_OK):
            pytest.skip(f"e2e: {MOTO_SERVER} is missing (pip install 'moto[server]>=5,<6' in .venv)")
        super().__init__()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)]

    def ready(self) -> bool:
        return self._port_open()


class PubsubEmulator(_Server):
    """The gcloud SDK's Pub/Sub emulator (Java) on 127.0.0.1; clients find it through PUBSUB_EMULATOR_HOST."""

    label = "cloud-pubsub-emulator"

    def __init__(self) -> None:
        if not os.access(PUBSUB_EMULATOR, os.X_OK):
            pytest.skip(f"e2e: {PUBSUB_EMULATOR} is missing (apt-get install google-cloud-cli-pubsub-emulator)")
        super().__init__()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [str(PUBSUB_EMULATOR), "--host=127.0.0.1", f"--port={self.port}"]

    def ready(self) -> bool:
        return "Server started, listening on" in self.log.read_text(errors="replace") and self._port_open()


class _Runnable(Protocol):
    def run(self, stop: threading.Event) -> None: ...

    def interrupt(self) -> None: ...


@contextmanager
def running(module: _Runnable, stop_within: float = 15.0) -> Iterator[list[BaseException]]:
    """Runs a module's `run` in a thread for the `with` block; yields the errors it raised. On leaving,
    asks it to stop and fails the test if it has not stopped within `stop_within` seconds."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            module.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield errors
    finally:
        stop.set()
        module.interrupt()
        thread.join(stop_within)
        assert not thread.is_alive(), f"{type(module).__name__} did not stop within {stop_within:g} s"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Recorder:
    """A sink that keeps each batch, and the module state as the store would. The store fails (the
    call raises, nothing kept) while `fail` is set, or once `fail_after` non-empty batches are stored."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.batches: list[list[Event]] = []
        self.state: dict[str, Any] = {}
        self.fail = False
        self.fail_after = fail_after
        self.lock = threading.Lock()

    def __call__(self, events: list[Event], state: dict[str, Any] | None) -> None:
        with self.lock:
            if self.fail:
                raise OSError("disk full (test)")
            if self.fail_after is not None and len([b for b in self.batches if b]) >= self.fail_after and events:
                raise OSError("disk full (test)")
            self.batches.append(list(events))
            self.state.update(state or {})

    def read(self, key: str) -> Any:
        return self.state.get(key)

    @property
    def events(self) -> list[Event]:
        with self.lock:
            return [e for b in self.batches for e in b]

    def audit(self) -> list[Event]:
        return [e for e in self.events if e.decoder == "json"]

    def health(self) -> list[Event]:
        return [e for e in self.events if e.decoder == "vigil"]

    def first_alerts(self) -> dict[str, dict[str, Any]]:
        """Rule id -> the first alert it gave, the kept events analysed with the shipped rules."""
        from ..unit.support import analyzer

        a = analyzer()
        alerts: dict[str, dict[str, Any]] = {}
        for event in self.events:
            alert = a.analyse(event).alert
            if alert is not None:
                alerts.setdefault(alert["rule"]["id"], alert)
        return alerts
