"""Runs modules in threads; a module that fails is logged, counted and restarted with backoff (DESIGN §6.6)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from vigil.agent.modules.base import Module

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, modules: list[Module], max_backoff: float = 60.0) -> None:
        self.modules = modules
        self.max_backoff = max_backoff
        self.stop_event = threading.Event()
        self.restarts: dict[str, int] = {m.name: 0 for m in modules}
        self._threads: list[threading.Thread] = []
        # Each run of a module gets its own stop event, so one module can be stopped and run again
        # (restart on request) while the others keep going.
        self._run_stops: dict[str, threading.Event] = {}
        self._restart_requested: set[str] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        for module in self.modules:
            self._start_thread(module)

    def _start_thread(self, module: Module) -> None:
        thread = threading.Thread(target=self._keep_running, args=(module,), name=f"module-{module.name}",
                                  daemon=True)
        thread.start()
        self._threads.append(thread)

    def _new_run(self, module: Module) -> threading.Event:
        with self._lock:
            run_stop = threading.Event()
            if self.stop_event.is_set():
                run_stop.set()
            self._run_stops[module.name] = run_stop
            return run_stop

    def _take_restart(self, name: str) -> bool:
        with self._lock:
            requested = name in self._restart_requested
            self._restart_requested.discard(name)
            return requested

    def _keep_running(self, module: Module) -> None:
        delay = 1.0
        while not self.stop_event.is_set():
            try:
                module.run(self._new_run(module))
                if not self._take_restart(module.name):
                    return
                log.info("module %s restarted on request", module.name)
            except Exception:
                if self._take_restart(module.name):
                    log.info("module %s restarted on request (it raised while stopping)", module.name)
                    continue
                self.restarts[module.name] += 1
                log.exception("module %s failed; restarting in %.0f s", module.name, delay)
                self.stop_event.wait(delay)
                delay = min(delay * 2, self.max_backoff)

    def restart(self, name: str) -> int:
        """Stop module `name` and run it again (counted as a restart); raises ValueError for an unknown name."""
        module = next((m for m in self.modules if m.name == name), None)
        if module is None:
            known = ", ".join(m.name for m in self.modules) or "none"
            raise ValueError(f"no module named {name!r} (modules here: {known})")
        if self.stop_event.is_set():
            raise ValueError(f"module {name!r} is stopping with the rest of Vigil")
        with self._lock:
            self.restarts[name] += 1
            run_stop = self._run_stops.get(name)
            running = any(t.name == f"module-{name}" and t.is_alive() for t in self._threads)
            if running:
                self._restart_requested.add(name)
            if run_stop is not None:
                run_stop.set()
        module.interrupt()
        if not running:  # it had finished (or never started): run it afresh
            self._start_thread(module)
        log.info("module %s: restart requested", name)
        return self.restarts[name]

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self.stop_event.set()
            for run_stop in self._run_stops.values():
                run_stop.set()
        for module in self.modules:
            module.interrupt()
        for thread in self._threads:
            thread.join(timeout)

    def status(self) -> dict[str, Any]:
        return {m.name: {**m.status(), "restarts": self.restarts[m.name]} for m in self.modules}
