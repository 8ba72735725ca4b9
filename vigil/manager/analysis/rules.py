"""The rule model: what a loaded, validated rule holds (the YAML format is in docs/rules.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vigil.manager.analysis.conditions import Condition
from vigil.manager.analysis.fields import Fields, as_text

COMPLIANCE_KEYS = ("pci_dss", "gdpr", "hipaa", "nist_800_53", "tsc")


@dataclass(slots=True)
class Exception_:
    """An allowlist entry: when it matches, the rule does not fire and the hit is counted by name."""

    name: str
    conditions: list[Condition]
    raw: Condition | None = None

    def matches(self, fields: Fields) -> bool:
        return all(c.test(fields.get(c.path)) for c in self.conditions) and (
            self.raw is None or self.raw.test(fields.raw)
        )


@dataclass(slots=True, eq=False)
class Rule:
    """A loaded rule. Compared and hashed by identity: two rules are never 'equal' by content."""

    id: int
    level: int
    description: str
    file: str
    line: int
    order: int = 0
    groups: tuple[str, ...] = ()
    decoded_as: str | None = None
    if_sid: tuple[int, ...] = ()
    if_group: str | None = None
    conditions: list[Condition] = field(default_factory=list)
    raw: Condition | None = None
    exceptions: list[Exception_] = field(default_factory=list)
    mitre: tuple[str, ...] = ()
    compliance: dict[str, tuple[str, ...]] = field(default_factory=dict)
    options: frozenset[str] = frozenset()
    frequency: int | None = None
    timeframe: float | None = None
    same_fields: tuple[str, ...] = ()
    if_matched_sid: int | None = None
    if_matched_group: str | None = None
    _template: tuple[tuple[str, str], ...] | None = None
    # True when the rule's one condition is the index key that selected it, so being a candidate
    # already means it matched (set by seal()).
    key_only: bool = False

    def seal(self) -> Rule:
        only = self.conditions[0] if len(self.conditions) == 1 else None
        self.key_only = only is not None and only.fast != "" and not only.negate and self.raw is None
        return self

    def matches(self, fields: Fields) -> bool:
        """Every condition holds (exceptions are checked separately so hits can be counted)."""
        resolved = fields.resolved
        for cond in self.conditions:
            path = cond.path
            if not cond.test(resolved[path] if path in resolved else fields.get(path)):
                return False
        return self.raw is None or self.raw.test(fields.raw)

    def exception_hit(self, fields: Fields) -> str | None:
        for exc in self.exceptions:
            if exc.matches(fields):
                return exc.name
        return None

    def render_description(self, fields: Fields) -> str:
        """Fill `$(field.path)` placeholders; an absent field renders empty."""
        template = self._template
        if template is None:
            template = self._template = _parse_template(self.description)
        if len(template) == 1:
            return template[0][0]
        out: list[str] = []
        for literal, path in template:
            out.append(literal)
            if path:
                value: Any = fields.get(path)
                if isinstance(value, list):
                    out.append(", ".join(as_text(v) for v in value))
                elif value is not None:
                    out.append(value if type(value) is str else as_text(value))
        return "".join(out)


def _parse_template(text: str) -> tuple[tuple[str, str], ...]:
    """`a $(x) b` -> (("a ", "x"), (" b", "")): literal text, then the field that follows it."""
    parts: list[tuple[str, str]] = []
    rest = text
    while True:
        start = rest.find("$(")
        end = rest.find(")", start + 2) if start >= 0 else -1
        if start < 0 or end < 0:
            parts.append((rest, ""))
            return tuple(parts)
        parts.append((rest[:start], rest[start + 2 : end]))
        rest = rest[end + 1 :]
