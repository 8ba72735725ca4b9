"""Generated Python for the two hot paths of matching, built once when rules load.

Every event runs a few index lookups (`compile_candidates`) and rule condition checks
(`compile_conditions`); walking lists of conditions and dicts generically cost several times the
lookups themselves. The generated functions read each field with direct nested `dict.get` calls
and fall back to `Fields.get` (dotted keys, absent objects) only when that walk fails, so they
return what the generic references (`scan_candidates`, `conditions_hold`) return; tests hold them
to that.

No text from a rule file reaches the generated source: paths, values and matchers are passed in
as constants named by position (`P0`, `B0`, ...).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vigil.manager.analysis.fields import Fields, as_text

if TYPE_CHECKING:
    from vigil.manager.analysis.conditions import Condition
    from vigil.manager.analysis.rules import Rule
    from vigil.manager.analysis.ruleset import CandidateIndex, RegexIndex

_MISSING = object()

CandidatesFn = Callable[[Fields], "list[Rule]"]
ConditionsFn = Callable[[Fields], bool]
RenderFn = Callable[[Fields], str]


def value_hits(value: Any, bucket: dict[str, list[Rule]]) -> list[Rule]:
    """Non-string values (numbers, booleans, lists): compared as their text, any list item counts."""
    found: list[Rule] = []
    for item in value if isinstance(value, list) else (value,):
        hit = bucket.get(as_text(item))
        if hit:
            found.extend(hit)
    return found


def regex_hits(value: Any, rindex: RegexIndex) -> list[Rule]:
    found: list[Rule] = []
    prefixes = rindex.prefixes
    for item in value if isinstance(value, list) else (value,):
        text = item if type(item) is str else as_text(item)
        if prefixes is not None and not text.startswith(prefixes):
            continue
        for i in rindex.matcher.Match(text) or ():
            found.append(rindex.rules[i])
    return found


RULE_ORDER = operator.attrgetter("order")  # sibling rules are tried in file order


class _Source:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}

    def const(self, prefix: str, value: Any) -> str:
        name = f"{prefix}{len(self.constants)}"
        self.constants[name] = value
        return name

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def build(self, name: str, label: str, **helpers: Any) -> Any:
        namespace: dict[str, Any] = {**self.constants, "MISSING": _MISSING, **helpers}
        exec(compile("\n".join(self.lines), f"<{label}>", "exec"), namespace)
        return namespace[name]


def compile_candidates(index: CandidateIndex) -> CandidatesFn:
    """The index's `candidates(fields)` as one generated function."""
    src = _Source()
    always = src.const("A", tuple(index.always))
    src.emit(0, "def candidates(fields):")
    src.emit(1, f"found = list({always})")
    src.emit(1, "data = fields.data")
    probes: dict[str, dict[str, list[tuple[str, Any]]]] = {}
    for path, bucket in index.by_value.items():
        probes.setdefault(path.split(".", 1)[0], {}).setdefault(path, []).append(("value", bucket))
    for path, rindex in index.by_regex.items():
        probes.setdefault(path.split(".", 1)[0], {}).setdefault(path, []).append(("regex", rindex))
    for top, paths in probes.items():
        top_name = src.const("T", top)
        src.emit(1, f"node = data.get({top_name}, MISSING)")
        # An absent top-level object makes all its fields absent, unless some key has dots in it.
        src.emit(1, f"if node is not MISSING or not fields.lacks_top({top_name}):")
        for path, tests in paths.items():
            _emit_fetch(src, path)
            src.emit(2, "if type(value) is str:")
            for kind, target in tests:
                _emit_string_test(src, kind, target)
            src.emit(2, "elif value is not None:")
            for kind, target in tests:
                helper = "value_hits" if kind == "value" else "regex_hits"
                src.emit(3, f"found.extend({helper}(value, {src.const('X', target)}))")
    src.emit(1, "if len(found) > 1:")
    src.emit(2, "found = sorted(set(found), key=order)")
    src.emit(1, "return found")
    compiled: CandidatesFn = src.build(
        "candidates", f"candidates of {index.size} rules",
        value_hits=value_hits, regex_hits=regex_hits, order=RULE_ORDER,
    )
    return compiled


def compile_conditions(conditions: list[Condition], raw: Condition | None) -> ConditionsFn:
    """`matches(fields)`: every condition holds, string equals/regex tests inline, others by Condition.test."""
    src = _Source()
    src.emit(0, "def matches(fields):")
    src.emit(1, "data = fields.data")
    for cond in conditions:
        _emit_fetch(src, cond.path, depth=1, from_data=True)
        test = src.const("C", cond)
        if cond.fast:
            src.emit(1, "if type(value) is str:")
            if cond.fast == "equals":
                src.emit(2, f"if value {'in' if cond.negate else 'not in'} {src.const('E', cond.equals)}:")
            else:
                src.emit(2, f"if {src.const('S', cond.regex.search)}(value) is {'not ' if cond.negate else ''}None:")
            src.emit(3, "return False")
            src.emit(1, f"elif not {test}.test(value):")
        else:
            src.emit(1, f"if not {test}.test(value):")
        src.emit(2, "return False")
    src.emit(1, "return True" if raw is None else f"return {src.const('W', raw)}.test(fields.raw)")
    compiled: ConditionsFn = src.build("matches", f"conditions on {len(conditions)} fields")
    return compiled


def field_text(value: Any) -> str:
    """How a field reads in a description: lists joined with commas, absent as nothing."""
    if isinstance(value, list):
        return ", ".join(as_text(v) for v in value)
    return "" if value is None else as_text(value)


def compile_template(parts: tuple[tuple[str, str], ...]) -> RenderFn:
    """`render(fields)` for a parsed description: literal text and field values, concatenated."""
    src = _Source()
    src.emit(0, "def render(fields):")
    src.emit(1, "data = fields.data")
    pieces: list[str] = []
    for literal, path in parts:
        if literal:
            pieces.append(src.const("L", literal))
        if path:
            name = f"v{len(pieces)}"
            _emit_fetch(src, path, depth=1, from_data=True)
            src.emit(1, f"{name} = value if type(value) is str else field_text(value)")
            pieces.append(name)
    if len(pieces) <= 8:
        src.emit(1, f"return {' + '.join(pieces) or repr('')}")
    else:  # a long `+` chain would overflow the compiler's recursion limit
        src.emit(1, f"return ''.join(({', '.join(pieces)},))")
    compiled: RenderFn = src.build("render", f"description with {len(parts)} parts", field_text=field_text)
    return compiled


def _emit_fetch(src: _Source, path: str, depth: int = 2, from_data: bool = False) -> None:
    """`value` = the field at `path` by nested dict lookups, else through Fields.get, which also finds
    keys with dots in them (None if absent). Starts from `node`, its top-level object already
    fetched, unless `from_data`."""
    if from_data:
        src.emit(depth, f"node = data.get({src.const('T', path.split('.', 1)[0])}, MISSING)")
    src.emit(depth, "value = node")
    for part in path.split(".")[1:]:
        src.emit(depth, f"value = value.get({src.const('K', part)}, MISSING) if type(value) is dict else MISSING")
    src.emit(depth, "if value is MISSING:")
    src.emit(depth + 1, f"value = fields.get({src.const('P', path)})")


def _emit_string_test(src: _Source, kind: str, target: Any) -> None:
    if kind == "value":
        src.emit(3, f"hit = {src.const('B', target)}.get(value)")
        src.emit(3, "if hit:")
        src.emit(4, "found.extend(hit)")
        return
    matcher, rules = src.const("M", target.matcher), src.const("R", target.rules)
    indent = 3
    if target.prefixes is not None:
        src.emit(3, f"if value.startswith({src.const('F', target.prefixes)}):")
        indent = 4
    src.emit(indent, f"for i in {matcher}.Match(value) or ():")
    src.emit(indent + 1, f"found.append({rules}[i])")
