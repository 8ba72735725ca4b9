"""Matches one decoded event against the rule tree; the deepest, then highest-level match wins."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

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


@dataclass(slots=True, init=False)
class Match:
    rule: Rule | None
    depth: int
    chain: list[int]
    correlated: int

    # Written out: one is made per event, and a generated __init__ would stay interpreted.
    def __init__(self, rule: Rule | None, depth: int = -1, chain: list[int] | None = None, correlated: int = 0) -> None:
        self.rule = rule
        self.depth = depth
        self.chain = [] if chain is None else chain
        self.correlated = correlated


class Engine:
    """Holds the rule set and the state that outlives one event (correlation windows, counters)."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self._children = ruleset.child_indexes
        self._shared = ruleset.shared
        self._roots = ruleset.root_indexes
        self._any_decoder = ruleset.any_decoder
        self.correlator = Correlator()
        self.suppressed: Counter[tuple[int, str]] = Counter()
        self.matched_by_rule: Counter[int] = Counter()

    def match(self, decoder: str, fields: Fields, timestamp: float, trace: list[Step] | None = None) -> Match:
        """Depth-first over the rules that can match, in rule order, as Wazuh walks its tree.

        Each candidate waits on the stack with the chain of matched rules above it, so the winner's
        chain is at hand without a copy per rule tried.
        """
        best: Rule | None = None
        best_depth = -1
        best_chain: tuple[int, ...] = ()
        correlated = 0
        children = self._children
        shared = self._shared
        skippable = self.ruleset.outranked_skippable
        # A rule reachable through several parents (if_group, a list of if_sid) is tried once per
        # event, so correlation and exception counts see each event once.
        tried: set[int] | None = None
        roots = self._roots.get(decoder, self._any_decoder).find(fields)  # RuleSet.roots, inlined
        if not roots:  # most lines of a text log: no rule for their program
            return Match(None)
        # One root is the usual case: no reversed copy then.
        stack: list[tuple[Rule, int, tuple[int, ...]]] = (
            [(roots[0], 0, ())] if len(roots) == 1 else [(rule, 0, ()) for rule in reversed(roots)]
        )
        while stack:
            rule, depth, chain = stack.pop()
            if rule.id in shared:
                if tried is None:
                    tried = set()
                elif rule.id in tried:
                    continue
                tried.add(rule.id)
            if (best is not None and trace is None and rule in skippable
                    and (depth < best_depth or (depth == best_depth and rule.level <= best.level))):
                continue  # it cannot win: a match deeper than it, or as deep and as high, is already found
            if not (rule.key_only or rule.holds(fields)):
                if trace is not None:
                    trace.append(Step(rule.id, depth, "no match"))
                continue
            if rule.exceptions and self._excepted(rule, fields, depth, trace):
                continue
            count = 0
            if rule.frequency is not None:
                fired, count = self.correlator.observe(rule, fields, timestamp)
                if not fired:
                    if trace is not None:
                        trace.append(Step(rule.id, depth, f"counted {count}/{rule.frequency} in {rule.timeframe:g} s"))
                    continue
            elif rule.timeframe is not None and not self.correlator.recall(rule, fields, timestamp):
                if trace is not None:
                    followed = rule.if_matched_sid or f"group {rule.if_matched_group}"
                    trace.append(Step(rule.id, depth, f"no match of {followed} before it in {rule.timeframe:g} s"))
                continue
            if trace is not None:
                trace.append(Step(rule.id, depth, "matched"))
            chain = (*chain, rule.id)
            if depth > best_depth or (depth == best_depth and best is not None and rule.level > best.level):
                best, best_depth, best_chain, correlated = rule, depth, chain, count
            index = children.get(rule.id)
            if index is not None:
                kids = index.find(fields)
                if len(kids) == 1:
                    stack.append((kids[0], depth + 1, chain))
                elif kids:
                    stack.extend([(kid, depth + 1, chain) for kid in reversed(kids)])
        found = Match(best, best_depth, list(best_chain), correlated)
        if best is not None:
            if best.id in self.ruleset.watchers:
                self._correlate_matched(found, fields, timestamp, trace)
            winner = found.rule or best  # a correlation rule may have taken over
            self.matched_by_rule[winner.id] += 1
            for follower in self.ruleset.followers.get(winner.id, ()):
                self.correlator.remember(follower, fields, timestamp)
        return found

    def _excepted(self, rule: Rule, fields: Fields, depth: int, trace: list[Step] | None) -> bool:
        exception = rule.exception_hit(fields)
        if exception is None:
            return False
        self.suppressed[(rule.id, exception)] += 1
        if trace is not None:
            trace.append(Step(rule.id, depth, f"suppressed by exception {exception!r}"))
        return True

    def _correlate_matched(self, best: Match, fields: Fields, ts: float, trace: list[Step] | None) -> None:
        """`if_matched_sid` / `if_matched_group` rules: fire after enough matches of another rule."""
        assert best.rule is not None
        for rule in self.ruleset.watchers.get(best.rule.id, ()):
            if not rule.holds(fields) or (rule.exceptions and rule.exception_hit(fields)):
                continue
            fired, count = self.correlator.observe(rule, fields, ts)
            if trace is not None:
                outcome = "matched" if fired else f"counted {count}/{rule.frequency} in {rule.timeframe:g} s"
                trace.append(Step(rule.id, best.depth + 1, outcome))
            if fired:
                best.chain = [*best.chain, rule.id]
                best.rule, best.depth, best.correlated = rule, best.depth + 1, count
                return
