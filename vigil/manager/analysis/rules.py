"""The rule model: what a loaded, validated rule holds (the YAML format is in docs/rules.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from vigil.manager.analysis.codegen import ConditionsFn, RenderFn, compile_conditions, compile_template, field_text
from vigil.manager.analysis.conditions import Condition
from vigil.manager.analysis.fields import Fields, split_path

COMPLIANCE_KEYS: Final[tuple[str, ...]] = ("pci_dss", "gdpr", "hipaa", "nist_800_53", "tsc")
# True when this module runs compiled by mypyc (vigil/compiled.py): its file is then a shared library.
COMPILED: Final = not __file__.endswith(".py")
# Shared by the rules without one, rather than an empty dict each (a rule set is mostly such rules).
NO_COMPLIANCE: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({})


def conditions_hold(conditions: list[Condition], raw: Condition | None, fields: Fields) -> bool:
    """The generic check: what exceptions run, and the reference generated `Rule.matches` is tested against."""
    for cond in conditions:
        if not cond.test(fields.lookup(cond.path, cond.parts)):
            return False
    return raw is None or raw.test(fields.raw)


def render_template(parts: tuple[tuple[str, str, tuple[str, ...]], ...], fields: Fields) -> str:
    """A parsed description (literal text, field path, path split) with its fields filled in."""
    out: list[str] = []
    for literal, path, split in parts:
        out.append(literal)
        if path:
            value = fields.lookup(path, split)
            out.append(value if type(value) is str else field_text(value))
    return "".join(out)


def _unsealed(fields: Fields) -> bool:
    raise RuntimeError("Rule.seal() was not called")


def _unsealed_render(fields: Fields) -> str:
    raise RuntimeError("Rule.seal() was not called")


@dataclass(slots=True)
class Exception_:
    """An allowlist entry: when it matches, the rule does not fire and the hit is counted by name."""

    name: str
    conditions: list[Condition]
    raw: Condition | None = None

    def matches(self, fields: Fields) -> bool:
        return conditions_hold(self.conditions, self.raw, fields)


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
    exceptions: Sequence[Exception_] = ()
    mitre: tuple[str, ...] = ()
    compliance: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: NO_COMPLIANCE)
    options: frozenset[str] = frozenset()
    frequency: int | None = None
    timeframe: float | None = None
    same_fields: tuple[str, ...] = ()
    if_matched_sid: int | None = None
    if_matched_group: str | None = None
    # True when the rule has no condition, or its one condition (or its `raw` regex alone) is the
    # index key that selected it: being a candidate already means it matched (set by seal()).
    key_only: bool = False

    # Every condition holds (exceptions are checked separately so hits can be counted): generated
    # after seal(), equal to conditions_hold(rule.conditions, rule.raw, fields).
    matches: ConditionsFn = field(default=_unsealed, repr=False)
    # The description with `$(field.path)` placeholders filled (absent fields render empty).
    render_description: RenderFn = field(default=_unsealed_render, repr=False)
    _template: tuple[tuple[str, str, tuple[str, ...]], ...] = field(default=(), repr=False)

    def seal(self) -> Rule:
        """Called once the rule is complete: precomputes what matching every event needs."""
        only = self.conditions[0] if len(self.conditions) == 1 else None
        raw = self.raw
        self.key_only = (only is not None and only.fast != "" and not only.negate and raw is None) or (
            not self.conditions and (raw is None or (raw.fast == "regex" and not raw.negate)))
        # Generated at first use: most of a large rule set never runs, and the generated code was
        # most of a loaded rule's memory (BENCHMARKS.md, log analysis).
        self.matches = self._first_matches
        self.render_description = self._first_render
        return self

    @property
    def follows(self) -> bool:
        """A rule that matches an event only when an earlier one matched `if_matched_*` within `timeframe`
        (Wazuh's if_matched rules without a frequency: "failures, then a success")."""
        return self.frequency is None and (self.if_matched_sid is not None or self.if_matched_group is not None)

    def _first_matches(self, fields: Fields) -> bool:
        # Compiled, the plain loop of conditions_hold is faster than generated Python (1.5x on
        # the Kubernetes audit rules); interpreted, the generated code is.
        self.matches = self.holds if COMPILED else compile_conditions(self.conditions, self.raw)
        return self.matches(fields)

    def holds(self, fields: Fields) -> bool:
        """matches(fields); compiled, a direct call of the loop (no call through the attribute)."""
        return conditions_hold(self.conditions, self.raw, fields) if COMPILED else self.matches(fields)

    def _first_render(self, fields: Fields) -> str:
        template = _parse_template(self.description)
        if COMPILED:  # as for matches: a compiled loop beats generated Python, which beats an interpreted loop
            self._template = tuple((literal, path, split_path(path)) for literal, path in template)
            self.render_description = self._render
        else:
            self.render_description = compile_template(template)
        return self.render_description(fields)

    def _render(self, fields: Fields) -> str:
        return render_template(self._template, fields)

    def describe(self, fields: Fields) -> str:
        """render_description(fields); compiled, a direct call once the template is parsed."""
        if COMPILED and self._template:
            return render_template(self._template, fields)
        return self.render_description(fields)

    def exception_hit(self, fields: Fields) -> str | None:
        for exc in self.exceptions:
            if exc.matches(fields):
                return exc.name
        return None


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
