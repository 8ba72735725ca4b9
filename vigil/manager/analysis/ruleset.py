"""The rule tree and its indexes: an event is only tried against rules that can match it."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from vigil.manager.analysis.codegen import MERGES, RULE_ORDER, CandidatesFn, compile_candidates, regex_hits, value_hits
from vigil.manager.analysis.fields import Fields, split_path
from vigil.manager.analysis.re2fast import SearchSet, literal_prefix
from vigil.manager.analysis.rules import COMPILED, Rule


@dataclass
class RegexIndex:
    """All the key regexes sibling rules put on one field, tried at once with an RE2 Set.

    When every one of them is anchored on a literal prefix (`^exec_start: `), a value that starts
    with none of those prefixes cannot match, and str.startswith settles it without RE2.
    """

    matcher: SearchSet
    rules: list[Rule]
    prefixes: tuple[str, ...] | None = None


@dataclass
class CandidateIndex:
    """Narrows a list of sibling rules to those whose key condition holds for an event.

    Each rule's most selective equals/in/list condition is its key (one dict lookup); failing that,
    its first positive regex joins the field's RE2 Set, failing that its positive `raw` regex joins
    the Set over the whole line, and failing that a field it requires (`exists: true`) is its key;
    rules with none of these are always tried.
    """

    by_value: dict[str, dict[str, list[Rule]]] = field(default_factory=dict)
    by_regex: dict[str, RegexIndex] = field(default_factory=dict)
    # Grouped by top-level key, so that all the fields under an absent object (`container.*` on an
    # event without inspect data) cost one dict lookup together.
    # Each entry: (path, path split at its dots, bucket or regex index).
    value_keys: list[tuple[str, list[tuple[str, tuple[str, ...], dict[str, list[Rule]]]]]] = field(
        default_factory=list)
    regex_keys: list[tuple[str, list[tuple[str, tuple[str, ...], RegexIndex]]]] = field(default_factory=list)
    by_raw: RegexIndex | None = None
    by_exists: dict[str, list[Rule]] = field(default_factory=dict)  # path -> rules that need it present
    always: list[Rule] = field(default_factory=list)
    size: int = 0
    # The rules whose key holds for an event, in rule order: scan_candidates when compiled, else a
    # generated function (codegen.py); whichever is faster there, as for Rule.matches.
    candidates: CandidatesFn = field(default=lambda fields: [], repr=False)
    # Merged lists of rules (several keys hit), by the rules found: the same few come back each event.
    merged: dict[tuple[Rule, ...], list[Rule]] = field(default_factory=dict, repr=False)

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
        raw_members: list[Rule] = []
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
            if rule.raw is not None and rule.raw.regex is not None and not rule.raw.negate:
                raw_members.append(rule)
                continue
            ekey = next((c for c in rule.conditions if c.exists is True and not c.negate), None)
            if ekey is not None:
                index.by_exists.setdefault(ekey.path, []).append(rule)
                continue
            index.always.append(rule)
        for path, members in regex_members.items():
            sources = [next(c.regex_source for c in rule.conditions if c.path == path and c.regex is not None)
                       for rule in members]
            index.by_regex[path] = _regex_index(sources, members)
        if raw_members:
            index.by_raw = _regex_index([rule.raw.regex_source for rule in raw_members if rule.raw], raw_members)
        index.value_keys = _by_top(index.by_value)
        index.regex_keys = _by_top(index.by_regex)
        index.candidates = index.find if COMPILED else compile_candidates(index)
        return index

    def find(self, fields: Fields) -> list[Rule]:
        """candidates(fields); compiled, a direct call of the loop (no call through the attribute)."""
        return scan_candidates(self, fields) if COMPILED else self.candidates(fields)


def _regex_index(sources: list[str | None], members: list[Rule]) -> RegexIndex:
    patterns = [source or "" for source in sources]
    prefixes = [literal_prefix(source) for source in patterns]
    return RegexIndex(SearchSet(patterns), members, tuple(prefixes) if all(prefixes) else None)


def scan_candidates(index: CandidateIndex, fields: Fields) -> list[Rule]:
    """The rules of `index` whose key holds for an event, in rule order; callers only read the list.

    Also the reference the generated `CandidateIndex.candidates` must agree with."""
    found: list[Rule] = list(index.always)
    data = fields.data
    for top, entries in index.value_keys:
        if top in data or not fields.lacks_top(top):
            for path, parts, bucket in entries:
                value = fields.lookup(path, parts)
                if type(value) is str:
                    hit = bucket.get(value)
                    if hit:
                        found.extend(hit)
                elif value is not None:
                    found.extend(value_hits(value, bucket))
    for top, regex_entries in index.regex_keys:
        if top in data or not fields.lacks_top(top):
            for path, parts, rindex in regex_entries:
                value = fields.lookup(path, parts)
                if value is not None:
                    found.extend(regex_hits(value, rindex))
    if index.by_raw is not None and fields.raw is not None:
        found.extend(regex_hits(fields.raw, index.by_raw))
    for path, needing in index.by_exists.items():
        if fields.get(path) is not None:
            found.extend(needing)
    if len(found) < 2:
        return found
    key = tuple(found)
    merged = index.merged.get(key)
    if merged is None:
        merged = sorted(set(found), key=RULE_ORDER)
        if len(index.merged) < MERGES:
            index.merged[key] = merged
    return merged


_T = TypeVar("_T")


def _by_top(by_path: dict[str, _T]) -> list[tuple[str, list[tuple[str, tuple[str, ...], _T]]]]:
    groups: dict[str, list[tuple[str, tuple[str, ...], _T]]] = {}
    for path, item in by_path.items():
        parts = split_path(path)
        groups.setdefault(parts[0], []).append((path, parts, item))
    return list(groups.items())


class RuleSet:
    """Rules arranged as Wazuh does: roots by decoder, children by `if_sid` / `if_group` parent."""

    def __init__(self, rules: dict[int, Rule]) -> None:
        self.rules = rules
        # Counting rules hang off the rule they count; rules that follow one sit in the tree under their parent.
        tree_rules = [r for r in rules.values()
                      if r.follows or (r.if_matched_sid is None and r.if_matched_group is None)]
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
        # Each decoder's roots include the decoder-independent ones, so one lookup serves an event.
        self.root_indexes: dict[str | None, CandidateIndex] = {
            name: CandidateIndex.build(rs + roots.get(None, [])) for name, rs in roots.items()}
        self.any_decoder = self.root_indexes.get(None) or CandidateIndex()
        self._children = {rid: CandidateIndex.build(rs) for rid, rs in children.items()}
        # Rules under more than one parent: the only ones an event can reach twice.
        parents: Counter[int] = Counter(rule.id for rs in children.values() for rule in rs)
        self.shared = frozenset(rid for rid, n in parents.items() if n > 1)
        # Rules that only matter when they win: no children, one parent, no counting and no exception
        # hits to count. The engine skips one that cannot beat the match it already has.
        self.outranked_skippable = frozenset(
            r for r in tree_rules if r.id not in children and r.id not in self.shared and r.frequency is None
            and r.timeframe is None and not r.exceptions)
        # The correlation rules that watch each rule, by id or by one of its groups, computed once:
        # `watchers` count its matches (frequency), `followers` remember its last one.
        self.watchers = _watching(rules, [r for r in rules.values() if not r.follows])
        self.followers = _watching(rules, [r for r in rules.values() if r.follows])

    def roots(self, decoder: str, fields: Fields) -> list[Rule]:
        return self.root_indexes.get(decoder, self.any_decoder).find(fields)

    @property
    def child_indexes(self) -> dict[int, CandidateIndex]:
        return self._children


def _watching(rules: dict[int, Rule], correlations: list[Rule]) -> dict[int, tuple[Rule, ...]]:
    """For each rule, the correlation rules among `correlations` that name it or one of its groups."""
    by_sid: dict[int, list[Rule]] = defaultdict(list)
    by_group: dict[str, list[Rule]] = defaultdict(list)
    for rule in correlations:
        if rule.if_matched_sid is not None:
            by_sid[rule.if_matched_sid].append(rule)
        if rule.if_matched_group is not None:
            by_group[rule.if_matched_group].append(rule)
    watching: dict[int, tuple[Rule, ...]] = {}
    for rule in rules.values():
        found = list(by_sid.get(rule.id, ()))
        for group in rule.groups:
            found.extend(by_group.get(group, ()))
        if found:
            watching[rule.id] = tuple(found)
    return watching
