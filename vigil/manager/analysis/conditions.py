"""Conditions a rule puts on one field or on the raw line: equals, regex, list, numeric, CIDR, exists."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vigil.manager.analysis.fields import as_text, split_path
from vigil.manager.analysis.re2fast import Regex, RegexError, re2_options

__all__ = ["Condition", "ConditionError", "build_condition", "compile_regex", "re2_options"]

OPERATORS = ("equals", "regex", "in", "list", "gt", "ge", "lt", "le", "cidr", "exists", "not")


class ConditionError(ValueError):
    """A condition in a rule file is malformed; the loader adds file and line."""

    line: int | None = None


def _values(value: Any) -> Iterable[Any]:
    """A list field matches when any of its elements matches."""
    if isinstance(value, list | tuple):
        return value
    return (value,)


@dataclass(slots=True)
class Condition:
    """All the tests one rule puts on one field; true when every test holds (or, with `not`, none)."""

    path: str
    equals: frozenset[str] | None = None
    regex: Regex | None = None
    regex_source: str | None = None
    numeric: tuple[tuple[str, float], ...] = ()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    exists: bool | None = None
    negate: bool = False
    fast: str = ""  # "equals" or "regex" when that is the only test: the hot path for string values
    parts: tuple[str, ...] = ()  # the path split at its dots (set by seal), for conditions_hold's walk

    def test(self, value: Any) -> bool:
        if type(value) is str:
            if self.fast == "equals":
                return (value in self.equals) != self.negate  # type: ignore[operator]
            if self.fast == "regex":
                return self.regex.search(value) != self.negate  # type: ignore[union-attr]
        elif type(value) is bool and self.fast == "equals":
            return (("true" if value else "false") in self.equals) != self.negate  # type: ignore[operator]
        return self._test(value) != self.negate

    def seal(self) -> Condition:
        """Note which single test this condition is, if any, so `test` can take the short path."""
        self.parts = split_path(self.path)
        others = bool(self.numeric or self.networks or self.exists is not None)
        if self.equals is not None and self.regex is None and not others:
            self.fast = "equals"
        elif self.regex is not None and self.equals is None and not others:
            self.fast = "regex"
        return self

    def _test(self, value: Any) -> bool:
        if value is None:
            return self.exists is False
        if self.exists is False:
            return False
        items = list(_values(value))
        # Loops rather than any(<generator>): compiled, a generator costs an object per call.
        equals = self.equals
        if equals is not None:
            for item in items:
                if (item if type(item) is str else as_text(item)) in equals:
                    break
            else:
                return False
        regex = self.regex
        if regex is not None:
            for item in items:
                if regex.search(item if type(item) is str else as_text(item)):
                    break
            else:
                return False
        for op, bound in self.numeric:
            if not any(compare_number(v, op, bound) for v in items):
                return False
        return not self.networks or any(in_networks(v, self.networks) for v in items)


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}


def compare_number(value: Any, op: str, bound: float) -> bool:
    """`value op bound` for gt/ge/lt/le; non-numbers (and booleans) never compare."""
    if isinstance(value, bool):
        return False
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return _COMPARE[op](number, bound)


def in_networks(value: Any, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        address = ipaddress.ip_address(str(value))
    except ValueError:
        return False
    return any(address in net for net in networks)


def compile_regex(pattern: str, lazy: bool = False) -> Regex:
    """RE2 only: linear time on hostile input, and the same syntax the multi-pattern Set takes.
    `lazy`: checked now, compiled for matching at first use (rules that never run cost no program)."""
    try:
        return Regex(pattern, lazy)
    except RegexError as exc:
        raise ConditionError(f"bad regex {pattern!r}: {exc}") from exc


def build_condition(path: str, spec: Any, lists: Mapping[str, frozenset[str]]) -> Condition:
    """Turn one `fields:` entry into a Condition; a bare scalar means equals."""
    cond = Condition(path=path)
    if not isinstance(spec, dict):
        if isinstance(spec, list):
            raise ConditionError(f"{path}: a list of values needs the form {{in: [...]}}")
        cond.equals = frozenset({as_text(spec)})
        return cond.seal()
    unknown = [k for k in spec if k not in OPERATORS]
    if unknown:
        raise ConditionError(f"{path}: unknown operator {unknown[0]!r}; use one of {', '.join(OPERATORS)}")
    if not spec:
        raise ConditionError(f"{path}: empty condition")
    equals: set[str] = set()
    if "equals" in spec:
        equals.add(as_text(spec["equals"]))
    if "in" in spec:
        if not isinstance(spec["in"], list) or not spec["in"]:
            raise ConditionError(f"{path}: 'in' takes a non-empty list of values")
        equals.update(as_text(v) for v in spec["in"])
    if "list" in spec:
        name = str(spec["list"])
        if name not in lists:
            raise ConditionError(f"{path}: no list named {name!r} (lists: {', '.join(sorted(lists)) or 'none'})")
        equals.update(lists[name])
    if "equals" in spec or "in" in spec or "list" in spec:
        cond.equals = frozenset(equals)
    if "regex" in spec:
        cond.regex_source = str(spec["regex"])
        try:
            cond.regex = compile_regex(cond.regex_source, lazy=True)
        except ConditionError as exc:
            raise ConditionError(f"{path}: {exc}") from exc
    for op in ("gt", "ge", "lt", "le"):
        if op in spec:
            bound = spec[op]
            if isinstance(bound, bool) or not isinstance(bound, int | float):
                raise ConditionError(f"{path}: {op!r} takes a number, got {bound!r}")
            cond.numeric += ((op, float(bound)),)
    if "cidr" in spec:
        blocks = spec["cidr"] if isinstance(spec["cidr"], list) else [spec["cidr"]]
        try:
            cond.networks = tuple(ipaddress.ip_network(str(b), strict=False) for b in blocks)
        except ValueError as bad:  # not `exc`: compiled code keeps one type per name in a function
            raise ConditionError(f"{path}: bad CIDR: {bad}") from bad
    if "exists" in spec:
        if not isinstance(spec["exists"], bool):
            raise ConditionError(f"{path}: 'exists' takes true or false")
        cond.exists = spec["exists"]
    if "not" in spec:
        if not isinstance(spec["not"], bool):
            raise ConditionError(f"{path}: 'not' takes true or false")
        cond.negate = spec["not"]
    return cond.seal()
