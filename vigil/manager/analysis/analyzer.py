"""Pure analysis of one event: decode, match, and build the alert. No outputs are touched, so
`vigil logtest`, the benchmarks and the pipeline (pipeline.py) run exactly this path. Compiled
with the rest of the hot path (vigil/compiled.py)."""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from vigil.alert import AlertIds, MitreCatalog, build_alert
from vigil.event import Event
from vigil.manager.analysis.decoders import decode
from vigil.manager.analysis.engine import Engine, Match, Step
from vigil.manager.analysis.text_decoders import TextDecoders

_new: Final = tuple.__new__


class Analysed(NamedTuple):
    """What analysis made of one event: the decoder, the rule chain tried, and the alert if any.
    (A named tuple, built with tuple.__new__: one is made per event.)"""

    decoder: str
    fields: dict[str, Any]
    match: Match
    alert: dict[str, Any] | None
    trace: list[Step] | None = None
    child_decoder: str | None = None  # for text lines: the child decoder that read the fields


class Analyzer:
    """Pure analysis: no outputs touched, so logtest and the benchmark use exactly this path."""

    def __init__(self, engine: Engine, mitre: MitreCatalog, manager_name: str, min_level: int,
                 text_decoders: TextDecoders | None = None) -> None:
        self.engine = engine
        self.text_decoders = text_decoders
        self.mitre = mitre
        self.manager_name = manager_name
        self.min_level = min_level
        # Level 0 never alerts (as in Wazuh): a level-0 child rule is how a match is silenced.
        self._alert_level = max(1, min_level)
        self.ids = AlertIds()

    def analyse(self, event: Event, trace: list[Step] | None = None) -> Analysed:
        decoded = decode(event, self.text_decoders)
        match = self.engine.match(decoded.name, decoded.fields, event.timestamp, trace)
        alert = None
        rule = match.rule
        if rule is not None and rule.level >= self._alert_level:
            alert = build_alert(
                event=event, rule=rule, description=rule.describe(decoded.fields), firedtimes=1,
                alert_id=self.ids.next(), manager_name=self.manager_name, decoder=decoded.name,
                decoder_parent=decoded.parent, mitre=self.mitre, predecoder=decoded.predecoder,
            )
        return _new(Analysed, (decoded.name, decoded.fields.data, match, alert, trace, decoded.child))
