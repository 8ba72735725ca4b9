"""What `vigil manager` and `vigil up` share: rules, the alert store, alerts.json and the pipeline."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from vigil.alert import MitreCatalog
from vigil.api.backend import Metric
from vigil.config import VigilConfig
from vigil.manager.analysis.analyzer import Analyzer
from vigil.manager.analysis.engine import Engine
from vigil.manager.analysis.folding import Folder
from vigil.manager.analysis.rule_loader import LoadedRules, load_rules, shipped_rules_dir
from vigil.manager.analysis.ruleset import RuleSet
from vigil.manager.analysis.text_decoders import TextDecoders, load_decoders, shipped_decoders_dir
from vigil.manager.outputs.alerts_file import AlertsFile, recover_alerts_file
from vigil.manager.outputs.store import AlertReader, Store
from vigil.manager.outputs.writer import LocalOutputs, Outputs, WriterProcess
from vigil.manager.pipeline import DEFAULT_FOLD_IGNORE, Pipeline

log = logging.getLogger(__name__)


def load_ruleset(config: VigilConfig) -> LoadedRules:
    """Shipped rules, then the user's directory (which may add rules and override by id)."""
    return load_rules([shipped_rules_dir(), config.rules_dir])


def load_text_decoders(config: VigilConfig) -> TextDecoders:
    """Shipped decoders, then the user's directory (which may add decoders and replace them by name)."""
    return load_decoders([shipped_decoders_dir(), config.decoders_dir])


def build_analyzer(config: VigilConfig, rules: LoadedRules, decoders: TextDecoders | None = None) -> Analyzer:
    return Analyzer(Engine(RuleSet(rules.rules)), MitreCatalog.shipped(), config.manager.name,
                    config.analysis.min_alert_level, decoders if decoders is not None else load_text_decoders(config))


class AnalysisCore:
    """Loads rules (refusing to start on a bad file), opens the store, mends alerts.json, closes fold windows.

    With `writer_process` (the manager), the store and alerts.json are written by a child process
    (outputs/writer.py) and this process reads state through a read-only connection.
    """

    def __init__(self, config: VigilConfig, writer_process: bool = False) -> None:
        self.config = config
        self.started = time.time()
        self.rules = load_ruleset(config)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        json_path = config.alerts_json_path if config.outputs.alerts_json.enabled else None
        self.outputs: Outputs
        self.store: Store | None = None
        if writer_process:
            self.outputs = WriterProcess(config.db_path, json_path)
            self._reader: AlertReader | None = AlertReader(config.db_path)
        else:
            self.store = Store(config.db_path, background_checkpoints=True)
            alerts_file = AlertsFile(json_path) if json_path is not None else None
            if alerts_file is not None:
                recover_alerts_file(self.store, alerts_file)
            self.outputs = LocalOutputs(self.store, alerts_file)
            self._reader = None
        self.pipeline = Pipeline(
            build_analyzer(config, self.rules),
            Folder(config.analysis.fold_window_seconds, DEFAULT_FOLD_IGNORE),
            None, None, outputs=self.outputs,
        )
        self.stopping = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="fold-ticker", daemon=True)

    def start(self) -> None:
        self._ticker.start()

    def _tick(self) -> None:
        while not self.stopping.wait(1.0):
            try:
                self.pipeline.tick()
            except Exception:
                log.exception("closing fold windows failed")

    def stop(self) -> None:
        self.stopping.set()
        self.pipeline.drain()
        self.outputs.close()
        if self._reader is not None:
            self._reader.close()

    def get_state(self, key: str) -> Any:
        if self._reader is not None:
            return self._reader.get_state(key)
        assert self.store is not None
        return self.store.get_state(key)

    def health(self) -> dict[str, Any]:
        stats = self.pipeline.stats
        engine = self.pipeline.analyzer.engine
        return {
            "uptime_seconds": round(time.time() - self.started, 1),
            "manager": self.config.manager.name,
            "data_dir": str(self.config.data_dir.resolve()),
            "rules_loaded": len(self.rules.rules),
            "events": stats.events,
            "alerts": stats.alerts,
            "alerts_folded": stats.folded,
            "matched_below_alert_level": stats.below_threshold,
            "decode_errors": stats.decode_errors,
            "analysis_errors": stats.analysis_errors,
            "suppressed": {f"{rid}:{name}": n for (rid, name), n in engine.suppressed.items()},
        }

    def metrics(self) -> list[Metric]:
        stats = self.pipeline.stats
        return [
            Metric("vigil_events_received_total", "Events received for analysis", "counter", [({}, stats.events)]),
            Metric("vigil_alerts_raised_total", "Alerts written, by rule level", "counter",
                   [({"level": str(level)}, n) for level, n in sorted(stats.by_level.items())]),
            Metric("vigil_alerts_folded_total", "Identical alerts counted into a fold instead of written",
                   "counter", [({}, stats.folded)]),
            Metric("vigil_decode_errors_total", "Events that could not be decoded", "counter",
                   [({}, stats.decode_errors)]),
            Metric("vigil_analysis_errors_total", "Events whose analysis failed", "counter",
                   [({}, stats.analysis_errors)]),
        ]
