"""Loads rule files (shipped, then the user's), validating everything before anything is used."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigil.content import CONTENT_DIR
from vigil.errors import Problem, RuleLoadError
from vigil.manager.analysis.conditions import ConditionError, build_condition
from vigil.manager.analysis.fields import as_text
from vigil.manager.analysis.rule_buffer import RuleBuffer, pack
from vigil.manager.analysis.rules import COMPLIANCE_KEYS, Exception_, Rule
from vigil.yamlsrc import line_of

RULE_KEYS = frozenset(
    {
        "id", "level", "description", "groups", "decoded_as", "if_sid", "if_group", "fields", "raw",
        "exceptions", "mitre", "options", "frequency", "timeframe", "same_fields", "if_matched_sid",
        "if_matched_group", "overwrite", "info", *COMPLIANCE_KEYS,
    }
)
OPTIONS = frozenset({"no_full_log", "no_fold"})
FILE_KEYS = frozenset({"rules", "lists"})


@dataclass
class LoadedRules:
    rules: dict[int, Rule]
    lists: dict[str, frozenset[str]]
    files: list[str] = field(default_factory=list)


def shipped_rules_dir() -> Path:
    return CONTENT_DIR / "rules"


def rule_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yml", ".yaml") and p.is_file())


def load_rules(dirs: Iterable[Path]) -> LoadedRules:
    """Read every `*.yml` in the given directories in order; later directories override by id.

    Raises RuleLoadError listing every problem found; a partial rule set is never returned.
    """
    problems: list[Problem] = []
    blobs = [blob for directory in dirs for path in rule_files(directory)
             if (blob := pack(path, problems, _rule_specs))]
    gc.collect()  # the YAML loader is a web of reference cycles: free it before any rule is built
    files = [RuleBuffer(blob) for blob in blobs]
    lists = _collect_lists([(file.path, file.head) for file in files], problems)
    rules: dict[int, Rule] = {}
    order = 0
    for file in files:
        path = file.path
        problems.extend(file.shape)
        for spec in file.specs():
            rule = _build_rule(path, spec, lists, problems)
            if rule is None:
                continue
            order += 1
            rule.order = order
            previous = rules.get(rule.id)
            if previous is not None and not spec.get("overwrite"):
                problems.append(
                    Problem(
                        str(path), rule.line,
                        f"rule id {rule.id} is already defined at {previous.file}:{previous.line}; "
                        "add 'overwrite: true' to replace it on purpose, or pick another id",
                    )
                )
                continue
            rules[rule.id] = rule
    _check_references(rules, problems)
    if problems:
        raise RuleLoadError("rules", problems)
    return LoadedRules(rules=rules, lists=lists, files=[str(file.path) for file in files])


def _collect_lists(docs: list[tuple[Path, Any]], problems: list[Problem]) -> dict[str, frozenset[str]]:
    lists: dict[str, frozenset[str]] = {}
    for path, doc in docs:
        if not isinstance(doc, dict) or "lists" not in doc:
            continue
        section = doc["lists"]
        if not isinstance(section, dict):
            problems.append(Problem(str(path), line_of(doc, "lists"), "'lists' must map names to lists of values"))
            continue
        for name, values in section.items():
            if not isinstance(values, list) or not all(isinstance(v, str | int | float | bool) for v in values):
                problems.append(Problem(str(path), line_of(section, name), f"list {name!r} must be a list of values"))
                continue
            lists[name] = frozenset(as_text(v) for v in values)
    return lists


def _rule_specs(path: Path, doc: Any, problems: list[Problem]) -> list[Any]:
    if doc is None:
        return []
    if not isinstance(doc, dict):
        problems.append(Problem(str(path), 1, "a rule file is a mapping with 'rules:' (and optionally 'lists:')"))
        return []
    for key in doc:
        if key not in FILE_KEYS:
            message = f"unknown top-level key {key!r}; use 'rules' or 'lists'"
            problems.append(Problem(str(path), line_of(doc, key), message))
    specs = doc.get("rules", [])
    if not isinstance(specs, list):
        problems.append(Problem(str(path), line_of(doc, "rules"), "'rules' must be a list of rules"))
        return []
    good = []
    for spec in specs:
        if not isinstance(spec, dict):
            problems.append(Problem(str(path), line_of(doc, "rules"), f"each rule must be a mapping, found {spec!r}"))
        else:
            good.append(spec)
    return good


def _int_tuple(value: Any) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ValueError("must be a rule id or a list of rule ids")
    return tuple(items)


def _str_tuple(value: Any, what: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in items):
        raise ValueError(f"{what} must be a list of strings")
    # Interned: names (groups, fields, techniques) repeat across rules, and one copy is kept.
    return tuple(sys.intern(str(v)) for v in items)


def _build_rule(path: Path, spec: Any, lists: dict[str, frozenset[str]], problems: list[Problem]) -> Rule | None:
    start = len(problems)
    file = str(path)

    def bad(key: str | None, message: str, line: int | None = None) -> None:
        problems.append(Problem(file, line or line_of(spec, key), message))

    for key in spec:
        if key not in RULE_KEYS:
            bad(key, f"unknown rule key {key!r}; see docs/rules.md for the keys a rule takes")
    rule_id, level, description = spec.get("id"), spec.get("level"), spec.get("description")
    if not isinstance(rule_id, int) or isinstance(rule_id, bool) or not 1 <= rule_id <= 999_999:
        bad("id" if "id" in spec else None, f"rule 'id' must be a whole number from 1 to 999999, got {rule_id!r}")
        return None
    if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 16:
        bad("level" if "level" in spec else None, f"rule {rule_id}: 'level' must be 0..16, got {level!r}")
    if not isinstance(description, str) or not description.strip():
        bad("description" if "description" in spec else None, f"rule {rule_id}: 'description' is required text")
    rule = Rule(id=rule_id, level=level if isinstance(level, int) else 0, description=str(description),
                file=file, line=line_of(spec))
    try:
        _fill_optional(rule, spec, lists)
    except (ValueError, ConditionError) as exc:
        bad(getattr(exc, "key", None), f"rule {rule_id}: {exc}", getattr(exc, "line", None))
    return rule.seal() if len(problems) == start else None


class _KeyedError(ValueError):
    def __init__(self, key: str, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.line = line


def _fill_optional(rule: Rule, spec: dict[str, Any], lists: dict[str, frozenset[str]]) -> None:
    def keyed(key: str, fn: Any) -> Any:
        try:
            return fn(spec[key])
        except (ValueError, ConditionError) as exc:
            raise _KeyedError(key, f"{key}: {exc}", getattr(exc, "line", None)) from exc

    if "groups" in spec:
        rule.groups = keyed("groups", lambda v: _str_tuple(v, "groups"))
    if "decoded_as" in spec:
        rule.decoded_as = keyed("decoded_as", lambda v: _str_tuple(v, "decoded_as")[0])
    if "if_sid" in spec:
        rule.if_sid = keyed("if_sid", _int_tuple)
    if "if_group" in spec:
        rule.if_group = keyed("if_group", lambda v: _str_tuple(v, "if_group")[0])
    if "fields" in spec:
        rule.conditions = keyed("fields", lambda v: _conditions(v, lists))
    if "raw" in spec:
        rule.raw = keyed("raw", lambda v: build_condition("raw", v, lists))
    if "exceptions" in spec:
        rule.exceptions = keyed("exceptions", lambda v: _exceptions(v, lists))
    if "mitre" in spec:
        rule.mitre = keyed("mitre", lambda v: _str_tuple(v, "mitre"))
    compliance = {key: keyed(key, lambda v, k=key: _str_tuple(v, k)) for key in COMPLIANCE_KEYS if key in spec}
    if compliance:
        rule.compliance = compliance
    if "options" in spec:
        options = keyed("options", lambda v: frozenset(_str_tuple(v, "options")))
        unknown = options - OPTIONS
        if unknown:
            known = ", ".join(sorted(OPTIONS))
            raise _KeyedError("options", f"unknown option {sorted(unknown)[0]!r}; options: {known}")
        rule.options = options
    _fill_correlation(rule, spec, keyed)


def _fill_correlation(rule: Rule, spec: dict[str, Any], keyed: Any) -> None:
    if "frequency" in spec:
        rule.frequency = keyed("frequency", _positive_int)
        if "timeframe" not in spec:
            raise _KeyedError("frequency", "'frequency' needs a 'timeframe' in seconds")
    watches = "if_matched_sid" in spec or "if_matched_group" in spec
    if "timeframe" in spec:
        rule.timeframe = keyed("timeframe", _positive_number)
        if rule.frequency is None and not watches:
            raise _KeyedError("timeframe", "'timeframe' needs a 'frequency' (or an 'if_matched_sid'/"
                              "'if_matched_group' that the rule follows)")
    if "same_fields" in spec:
        rule.same_fields = keyed("same_fields", lambda v: _str_tuple(v, "same_fields"))
    if "if_matched_sid" in spec:
        rule.if_matched_sid = keyed("if_matched_sid", lambda v: _int_tuple(v)[0])
    if "if_matched_group" in spec:
        rule.if_matched_group = keyed("if_matched_group", lambda v: _str_tuple(v, "if_matched_group")[0])
    key = "if_matched_sid" if "if_matched_sid" in spec else "if_matched_group"
    if watches and rule.timeframe is None:
        raise _KeyedError(key, f"'{key}' needs a 'timeframe' in seconds")
    if watches and rule.frequency is None and not rule.if_sid and rule.if_group is None:
        raise _KeyedError(key, f"'{key}' needs either 'frequency' (count its matches) or an 'if_sid'/'if_group' "
                          "parent (match that parent's events that follow one of its matches)")


def _positive_int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 2:
        raise ValueError("must be a whole number of at least 2")
    return value


def _positive_number(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ValueError("must be a positive number of seconds")
    return float(value)


def _conditions(value: Any, lists: dict[str, frozenset[str]]) -> list[Any]:
    if not isinstance(value, dict) or not value:
        raise ValueError("must map field paths to conditions")
    out = []
    for path, spec in value.items():
        try:
            out.append(build_condition(sys.intern(str(path)), spec, lists))
        except ConditionError as exc:
            exc.line = line_of(value, path)
            raise
    return out


def _exceptions(value: Any, lists: dict[str, frozenset[str]]) -> list[Exception_]:
    if not isinstance(value, list):
        raise ValueError("must be a list of {name, fields, raw}")
    out = []
    for item in value:
        if not isinstance(item, dict) or "name" not in item or not ({"fields", "raw"} & item.keys()):
            raise ValueError("each exception needs a 'name' and 'fields' and/or 'raw'")
        extra = set(item) - {"name", "fields", "raw"}
        if extra:
            raise ValueError(f"unknown exception key {sorted(extra)[0]!r}")
        conds = _conditions(item["fields"], lists) if "fields" in item else []
        raw = build_condition("raw", item["raw"], lists) if "raw" in item else None
        out.append(Exception_(name=str(item["name"]), conditions=conds, raw=raw))
    return out


def _check_references(rules: dict[int, Rule], problems: list[Problem]) -> None:
    groups = {g for r in rules.values() for g in r.groups}
    for rule in rules.values():
        for parent in rule.if_sid:
            if parent not in rules:
                problems.append(Problem(rule.file, rule.line, f"rule {rule.id}: if_sid {parent} names no rule"))
        for ref, what in ((rule.if_group, "if_group"), (rule.if_matched_group, "if_matched_group")):
            if ref is not None and ref not in groups:
                problems.append(Problem(rule.file, rule.line, f"rule {rule.id}: {what} {ref!r} names no group"))
        if rule.if_matched_sid is not None and rule.if_matched_sid not in rules:
            message = f"rule {rule.id}: if_matched_sid {rule.if_matched_sid} names no rule"
            problems.append(Problem(rule.file, rule.line, message))
    _check_cycles(rules, problems)


def _check_cycles(rules: dict[int, Rule], problems: list[Problem]) -> None:
    for rule in rules.values():
        seen: set[int] = set()
        stack = list(rule.if_sid)
        while stack:
            current = stack.pop()
            if current == rule.id:
                problems.append(Problem(rule.file, rule.line, f"rule {rule.id}: its if_sid chain leads back to itself"))
                break
            if current in seen or current not in rules:
                continue
            seen.add(current)
            stack.extend(rules[current].if_sid)
