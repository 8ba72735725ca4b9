"""The rule tree and its indexes: an event is only tried against rules that can match it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import re2

from vigil.manager.analysis.conditions import re2_options
from vigil.manager.analysis.fields import Fields, as_text
from vigil.manager.analysis.rules import Rule


@dataclass
class _RegexIndex:
    """All the key regexes sibling rules put on one field, tried at once with an RE2 Set."""

    matcher: Any
    rules: list[Rule]


@dataclass
class CandidateIndex:
    """Narrows a list of sibling rules to those whose key condition holds for an event.

    Each rule's most selective equals/in/list condition is its key (one dict lookup); failing that,
    its first positive regex joins the field's RE2 Set; rules with neither are always tried.
    """

    by_value: dict[str, dict[str, list[Rule]]] = field(default_factory=dict)
    by_regex: dict[str, _RegexIndex] = field(default_factory=dict)
    always: list[Rule] = field(default_factory=list)
    size: int = 0

    @classmethod
    def build(cls, rules: Iterable[Rule]) -> CandidateIndex:
        index = cls()
        ordered = sorted(rules, key=lambda r: r.order)
        # Key each rule on its most selective field: the one with the most distinct values among siblings.
        distinct: dict[str, set[str]] = defaultdict(set)
        for rule in ordered:
            for cond in rule.conditions:
                if cond.equals is not None and not cond.negate:
                    distinct[cond.path].update(cond.equals)
        regex_members: dict[str, list[Rule]] = defaultdict(list)
        for rule in ordered:
            index.size += 1
            keys = [c for c in rule.conditions if c.equals is not None and not c.negate]
            key = max(keys, key=lambda c: len(distinct[c.path]), default=None)
            if key is not None and key.equals is not None:
                bucket = index.by_value.setdefault(key.path, {})
                for value in key.equals:
                    bucket.setdefault(value, []).append(rule)
                continue
            rkey = next((c for c in rule.conditions if c.regex is not None and not c.negate), None)
            if rkey is not None:
                regex_members[rkey.path].append(rule)
                continue
            index.always.append(rule)
        for path, members in regex_members.items():
            matcher = re2.Set.SearchSet(re2_options())
            for rule in members:
                source = next(c.regex_source for c in rule.conditions if c.path == path and c.regex is not None)
                matcher.Add(source)
            matcher.Compile()
            index.by_regex[path] = _RegexIndex(matcher, members)
        return index

    def candidates(self, fields: Fields) -> list[Rule]:
        found: list[Rule] = list(self.always)
        for path, bucket in self.by_value.items():
            value = fields.get(path)
            if value is None:
                continue
            for item in value if isinstance(value, list) else (value,):
                hit = bucket.get(as_text(item))
                if hit:
                    found.extend(hit)
        for path, rindex in self.by_regex.items():
            value = fields.get(path)
            if value is None:
                continue
            for item in value if isinstance(value, list) else (value,):
                for i in rindex.matcher.Match(as_text(item)) or ():
                    found.append(rindex.rules[i])
        if len(found) > 1:
            found = sorted(set(found), key=_order)
        return found


def _order(rule: Rule) -> int:
    return rule.order


class RuleSet:
    """Rules arranged as Wazuh does: roots by decoder, children by `if_sid` / `if_group` parent."""

    def __init__(self, rules: dict[int, Rule]) -> None:
        self.rules = rules
        tree_rules = [r for r in rules.values() if r.if_matched_sid is None and r.if_matched_group is None]
        roots: dict[str | None, list[Rule]] = defaultdict(list)
        children: dict[int, list[Rule]] = defaultdict(list)
        by_group: dict[str, list[Rule]] = defaultdict(list)
        for rule in rules.values():
            for group in rule.groups:
                by_group[group].append(rule)
        for rule in tree_rules:
            if not rule.if_sid and rule.if_group is None:
                roots[rule.decoded_as].append(rule)
            for parent in rule.if_sid:
                children[parent].append(rule)
            if rule.if_group is not None:
                for parent_rule in by_group[rule.if_group]:
                    if parent_rule.id != rule.id:
                        children[parent_rule.id].append(rule)
        self._roots = {name: CandidateIndex.build(rs) for name, rs in roots.items()}
        self._children = {rid: CandidateIndex.build(rs) for rid, rs in children.items()}
        self.matched_correlations: dict[int, list[Rule]] = defaultdict(list)
        self.group_correlations: dict[str, list[Rule]] = defaultdict(list)
        for rule in rules.values():
            if rule.if_matched_sid is not None:
                self.matched_correlations[rule.if_matched_sid].append(rule)
            if rule.if_matched_group is not None:
                self.group_correlations[rule.if_matched_group].append(rule)

    def roots(self, decoder: str, fields: Fields) -> list[Rule]:
        found: list[Rule] = []
        for name in (decoder, None):
            index = self._roots.get(name)
            if index is not None:
                found.extend(index.candidates(fields))
        return found

    def children(self, rule: Rule, fields: Fields) -> list[Rule]:
        index = self._children.get(rule.id)
        return index.candidates(fields) if index is not None else []

    def child_count(self, rule_id: int) -> int:
        index = self._children.get(rule_id)
        return index.size if index is not None else 0
