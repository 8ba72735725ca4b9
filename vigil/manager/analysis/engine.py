"""Matches one decoded event against the rule tree; the deepest, then highest-level match wins."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from vigil.manager.analysis.correlation import Correlator
from vigil.manager.analysis.fields import Fields
from vigil.manager.analysis.rules import Rule
from vigil.manager.analysis.ruleset import RuleSet


@dataclass(slots=True)
class Step:
    """One rule tried for an event, for `vigil logtest`."""

    rule_id: int
    depth: int
    outcome: str


@dataclass(slots=True)
class Match:
    rule: Rule | None
    depth: int = -1
    chain: list[int] = field(default_factory=list)
    correlated: int = 0


class Engine:
    """Holds the rule set and the state that outlives one event (correlation windows, counters)."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self._children = ruleset.child_indexes
        self.correlator = Correlator()
        self.suppressed: Counter[tuple[int, str]] = Counter()
        self.matched_by_rule: Counter[int] = Counter()

    def match(self, decoder: str, fields: Fields, timestamp: float, trace: list[Step] | None = None) -> Match:
        best = Match(rule=None)
        path: list[int] = []
        tried: set[int] = set()
        for root in self.ruleset.roots(decoder, fields):
            self._visit(root, fields, timestamp, 0, path, tried, best, trace)
        if best.rule is not None:
            if best.rule.id in self.ruleset.watchers:
                self._correlate_matched(best, fields, timestamp, trace)
            self.matched_by_rule[best.rule.id] += 1
        return best

    def _visit(
        self, rule: Rule, fields: Fields, ts: float, depth: int, path: list[int], tried: set[int], best: Match,
        trace: list[Step] | None,
    ) -> None:
        # A rule reachable through several parents (if_group, a list of if_sid) is tried once per
        # event, so correlation and exception counts see each event once and cycles cannot recurse.
        if rule.id in tried:
            return
        tried.add(rule.id)
        if not (rule.key_only or rule.matches(fields)):
            if trace is not None:
                trace.append(Step(rule.id, depth, "no match"))
            return
        exception = rule.exception_hit(fields) if rule.exceptions else None
        if exception is not None:
            self.suppressed[(rule.id, exception)] += 1
            if trace is not None:
                trace.append(Step(rule.id, depth, f"suppressed by exception {exception!r}"))
            return
        count = 0
        if rule.frequency is not None:
            fired, count = self.correlator.observe(rule, fields, ts)
            if not fired:
                if trace is not None:
                    trace.append(Step(rule.id, depth, f"counted {count}/{rule.frequency} in {rule.timeframe:g} s"))
                return
        if trace is not None:
            trace.append(Step(rule.id, depth, "matched"))
        path.append(rule.id)
        if best.rule is None or (depth, rule.level) > (best.depth, best.rule.level):
            best.rule, best.depth, best.chain, best.correlated = rule, depth, list(path), count
        index = self._children.get(rule.id)
        if index is not None:
            for child in index.candidates(fields):
                self._visit(child, fields, ts, depth + 1, path, tried, best, trace)
        path.pop()

    def _correlate_matched(self, best: Match, fields: Fields, ts: float, trace: list[Step] | None) -> None:
        """`if_matched_sid` / `if_matched_group` rules: fire after enough matches of another rule."""
        assert best.rule is not None
        for rule in self.ruleset.watchers.get(best.rule.id, ()):
            if not rule.matches(fields) or (rule.exceptions and rule.exception_hit(fields)):
                continue
            fired, count = self.correlator.observe(rule, fields, ts)
            if trace is not None:
                outcome = "matched" if fired else f"counted {count}/{rule.frequency} in {rule.timeframe:g} s"
                trace.append(Step(rule.id, best.depth + 1, outcome))
            if fired:
                best.chain = [*best.chain, rule.id]
                best.rule, best.depth, best.correlated = rule, best.depth + 1, count
                return
