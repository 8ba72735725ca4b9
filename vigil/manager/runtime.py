"""Builds a running Vigil from its configuration: analysis, outputs, and (all-in-one) the local agent."""

from __future__ import annotations

import gc
import logging
import threading
import time
from pathlib import Path
from typing import Any

from vigil import __version__
from vigil.agent.modules.base import Module
from vigil.agent.modules.docker.collector import CHECKPOINT_KEY, IMAGES_KEY, DockerModule
from vigil.agent.runtime import Supervisor
from vigil.alert import MitreCatalog
from vigil.config import VigilConfig
from vigil.event import AgentRef
from vigil.manager.analysis.engine import Engine
from vigil.manager.analysis.folding import Folder
from vigil.manager.analysis.rule_loader import LoadedRules, load_rules, shipped_rules_dir
from vigil.manager.analysis.ruleset import RuleSet
from vigil.manager.outputs.alerts_file import AlertsFile, recover_alerts_file
from vigil.manager.outputs.store import Store
from vigil.manager.pipeline import DEFAULT_FOLD_IGNORE, Analyzer, Pipeline

log = logging.getLogger(__name__)


def load_ruleset(config: VigilConfig) -> LoadedRules:
    """Shipped rules, then the user's directory (which may add rules and override by id)."""
    return load_rules([shipped_rules_dir(), config.rules_dir])


def build_analyzer(config: VigilConfig, rules: LoadedRules) -> Analyzer:
    return Analyzer(Engine(RuleSet(rules.rules)), MitreCatalog.shipped(), config.manager.name,
                    config.analysis.min_alert_level)


class AllInOne:
    """`vigil up`: the manager and a local agent in one process, on embedded defaults."""

    def __init__(self, config: VigilConfig) -> None:
        self.config = config
        self.started = time.time()
        self.rules = load_ruleset(config)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(config.db_path)
        alerts_file = AlertsFile(config.alerts_json_path) if config.outputs.alerts_json.enabled else None
        if alerts_file is not None:
            recover_alerts_file(self.store, alerts_file)
        self.pipeline = Pipeline(
            build_analyzer(config, self.rules),
            Folder(config.analysis.fold_window_seconds, DEFAULT_FOLD_IGNORE),
            self.store, alerts_file,
        )
        self.agent = AgentRef(config.agent.id, config.agent.name, config.agent.ip)
        modules: list[Module] = []
        if config.docker.enabled:
            saved = {key: self.store.get_state(key) for key in (CHECKPOINT_KEY, IMAGES_KEY)}
            modules.append(DockerModule(config.docker, self.agent, self.pipeline.process, saved))
        self.supervisor = Supervisor(modules)
        self._ticker = threading.Thread(target=self._tick, name="fold-ticker", daemon=True)

    def start(self) -> None:
        # Rules, indexes and caches live as long as the process: keep them out of the collector's
        # scans, which otherwise revisit them on every full collection.
        gc.freeze()
        self.supervisor.start()
        self._ticker.start()

    def _tick(self) -> None:
        while not self.supervisor.stop_event.wait(1.0):
            try:
                self.pipeline.tick()
            except Exception:
                log.exception("closing fold windows failed")

    def stop(self) -> None:
        self.supervisor.stop()
        self.pipeline.drain()
        self.store.close()
        if self.pipeline.alerts_file is not None:
            self.pipeline.alerts_file.close()

    def health(self) -> dict[str, Any]:
        stats = self.pipeline.stats
        engine = self.pipeline.analyzer.engine
        return {
            "status": "ok",
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started, 1),
            "manager": self.config.manager.name,
            "data_dir": str(Path(self.config.data_dir).resolve()),
            "rules_loaded": len(self.rules.rules),
            "events": stats.events,
            "alerts": stats.alerts,
            "alerts_folded": stats.folded,
            "matched_below_alert_level": stats.below_threshold,
            "decode_errors": stats.decode_errors,
            "analysis_errors": stats.analysis_errors,
            "suppressed": {f"{rid}:{name}": n for (rid, name), n in engine.suppressed.items()},
            "modules": self.supervisor.status(),
        }
