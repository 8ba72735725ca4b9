"""The alert JSON, Wazuh-compatible field for field (DESIGN §2.1)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import yaml

from vigil.alert_data import AlertData, alert_data
from vigil.content import CONTENT_DIR
from vigil.event import Event
from vigil.manager.analysis.rules import COMPLIANCE_KEYS, Rule

ALERT_VERSION = 1

# msgspec writes the same bytes as orjson for alerts, in half the time on this hot path
# (BENCHMARKS.md, agent channel), and also takes integers beyond 64 bits.
_encode: Final = msgspec.json.Encoder().encode


def encode_alert(alert: dict[str, Any]) -> bytes:
    """An alert as one line of JSON; values its source sent as JSON text (AlertData) are written as sent."""
    data = alert.get("data")
    if type(data) is AlertData:
        return _encode({**alert, "data": {**data, **data.verbatim}})
    return _encode(alert)


_PREFIXES: Final[dict[int, str]] = {}  # epoch second -> "2020-09-04T02:24:20." (bounded)


def _second_prefix(second: int) -> str:
    prefix = _PREFIXES.get(second)
    if prefix is None:
        prefix = datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        if len(_PREFIXES) >= 4096:
            _PREFIXES.clear()
        _PREFIXES[second] = prefix
    return prefix


# "000+0000" ... "999+0000": the end of a timestamp, by millisecond, without formatting per alert.
_MILLIS_SUFFIX: Final = tuple(f"{milli:03d}+0000" for milli in range(1000))


def wazuh_timestamp(epoch: float) -> str:
    """`2020-09-04T02:24:20.266+0000`: milliseconds, numeric UTC offset, as Wazuh writes it."""
    millis = int(epoch * 1000)
    return _second_prefix(millis // 1000) + _MILLIS_SUFFIX[millis % 1000]


def parse_wazuh_timestamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


class AlertIds:
    """Wazuh-style ids `<epoch seconds>.<nanoseconds>`, strictly increasing within a process.

    Not locked: the Pipeline serialises its callers.
    """

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> str:
        now = time.time_ns()
        if now <= self._last:
            now = self._last + 1
        self._last = now
        digits = str(now)  # 19 digits until the year 2286
        if len(digits) <= 9:  # a clock within a second of the epoch
            return f"0.{now:09d}"
        return digits[:-9] + "." + digits[-9:]


class MitreCatalog:
    """Technique names and tactics for the ids rules name; unknown ids pass through bare."""

    def __init__(self, table: dict[str, dict[str, Any]]) -> None:
        self.table = table
        self._static: dict[int, tuple[Rule, dict[str, Any]]] = {}

    @classmethod
    def shipped(cls) -> MitreCatalog:
        path = CONTENT_DIR / "mitre.yml"
        return cls(yaml.safe_load(path.read_text(encoding="utf-8")) or {})

    def rule_block(self, rule: Rule) -> dict[str, Any]:
        """`alert.rule` with what depends on the rule alone filled in, computed once per rule.

        Copied for each alert, which then sets description and firedtimes in their places.
        """
        cached = self._static.get(rule.id)
        if cached is not None and cached[0] is rule:
            return cached[1]
        block: dict[str, Any] = {
            "level": rule.level, "description": "", "id": str(rule.id), "firedtimes": 0, "mail": False,
            "groups": list(rule.groups),
        }
        if rule.mitre:
            block["mitre"] = self.block(rule.mitre)
        for key in COMPLIANCE_KEYS:
            if key in rule.compliance:
                block[key] = list(rule.compliance[key])
        self._static[rule.id] = (rule, block)
        return block

    def block(self, ids: tuple[str, ...]) -> dict[str, list[str]]:
        tactics: list[str] = []
        techniques: list[str] = []
        for tid in ids:
            entry = self.table.get(tid, {})
            techniques.append(str(entry.get("technique", tid)))
            for tactic in entry.get("tactic", []):
                if tactic not in tactics:
                    tactics.append(tactic)
        return {"id": list(ids), "tactic": tactics, "technique": techniques}


def build_alert(
    *, event: Event, rule: Rule, description: str, firedtimes: int, alert_id: str, manager_name: str,
    decoder: str, decoder_parent: str | None, mitre: MitreCatalog, predecoder: dict[str, Any] | None = None,
) -> dict[str, Any]:
    rule_block = mitre.rule_block(rule).copy()
    rule_block["description"] = description
    rule_block["firedtimes"] = firedtimes
    alert: dict[str, Any] = {
        "timestamp": wazuh_timestamp(event.timestamp),
        "rule": rule_block,
        "agent": event.agent.to_dict(),
        "manager": {"name": manager_name},
        "id": alert_id,
        "decoder": {"name": decoder} if decoder_parent is None else {"parent": decoder_parent, "name": decoder},
        "location": event.location,
        "data": event.data if event.verbatim is None else alert_data(event.data, event.verbatim),
    }
    if predecoder is not None:  # a text line's syslog header, under Wazuh's name
        alert["predecoder"] = predecoder
    if event.raw is not None and "no_full_log" not in rule.options:
        alert["full_log"] = event.raw
    return alert
