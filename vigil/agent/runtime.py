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

    def start(self) -> None:
        for module in self.modules:
            thread = threading.Thread(target=self._keep_running, args=(module,), name=f"module-{module.name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def _keep_running(self, module: Module) -> None:
        delay = 1.0
        while not self.stop_event.is_set():
            try:
                module.run(self.stop_event)
                return
            except Exception:
                self.restarts[module.name] += 1
                log.exception("module %s failed; restarting in %.0f s", module.name, delay)
                self.stop_event.wait(delay)
                delay = min(delay * 2, self.max_backoff)

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        for module in self.modules:
            module.interrupt()
        for thread in self._threads:
            thread.join(timeout)

    def status(self) -> dict[str, Any]:
        return {m.name: {**m.status(), "restarts": self.restarts[m.name]} for m in self.modules}
