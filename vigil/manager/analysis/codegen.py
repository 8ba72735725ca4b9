"""Generated Python for the two hot paths of matching, built once when rules load.

Every event runs a few index lookups (`compile_candidates`) and rule condition checks
(`compile_conditions`); walking lists of conditions and dicts generically cost several times the
lookups themselves. The generated functions read each field with direct nested `dict.get` calls
and fall back to `Fields.get` (dotted keys, absent objects) only when that walk fails, so they
return what the generic references (`scan_candidates`, `conditions_hold`) return; tests hold them
to that.

No text from a rule file reaches the generated source: paths, values and matchers are passed in
as constants named by position (`P0`, `B0`, ...). So rules of the same shape (the same number of
conditions of the same kinds on paths of the same depth) get the same source, compiled once and
shared: each rule then holds a closure over its constants, not a code object of its own, which
took most of a rule's memory (BENCHMARKS.md, log analysis).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from vigil.manager.analysis.fields import Fields, as_text

if TYPE_CHECKING:
    from vigil.manager.analysis.conditions import Condition
    from vigil.manager.analysis.rules import Rule
    from vigil.manager.analysis.ruleset import CandidateIndex, RegexIndex

_MISSING: Final = object()
MERGES: Final = 1024  # merged candidate lists kept per index (compile_candidates)

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
        for i in rindex.matcher.match_text(text):
            found.append(rindex.rules[i])
    return found


RULE_ORDER: Final = operator.attrgetter("order")  # sibling rules are tried in file order


class _Source:
    """Generated source and the constants it names; `build` returns the function bound to them."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}

    def const(self, prefix: str, value: Any) -> str:
        name = f"{prefix}{len(self.constants)}"
        self.constants[name] = value
        return name

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * (depth + 1) + line)

    def build(self, name: str, label: str) -> Any:
        source = "\n".join([f"def make({', '.join(self.constants)}):", *self.lines, f"    return {name}"])
        return _factory(source, label)(*self.constants.values())


@functools.lru_cache(maxsize=4096)
def _factory(source: str, label: str) -> Callable[..., Any]:
    """One compiled factory per distinct source: rules of the same shape share its code."""
    namespace: dict[str, Any] = dict(_HELPERS)
    exec(compile(source, f"<{label}>", "exec"), namespace)
    return namespace["make"]  # type: ignore[no-any-return]


def compile_candidates(index: CandidateIndex) -> CandidatesFn:
    """The index's `candidates(fields)` as one generated function."""
    src = _Source()
    if not (index.by_value or index.by_regex or index.by_exists or index.by_raw):
        # Only rules that are always tried (a decoder's root, mostly): the same list every time.
        # Callers (the engine) only read it.
        src.emit(0, "def candidates(fields):")
        src.emit(1, f"return {src.const('A', list(index.always))}")
        compiled_always: CandidatesFn = src.build("candidates", "candidates")
        return compiled_always
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
        if list(paths) == [top]:  # one key (a text log's fields): absent is absent, dots or not
            src.emit(1, "if node is not MISSING:")
        else:  # an absent top-level object makes its fields absent, unless some key has dots in it
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
    for path, needing in index.by_exists.items():
        _emit_fetch(src, path, depth=1, from_data=True)
        src.emit(1, "if value is not None:")
        src.emit(2, f"found.extend({src.const('N', needing)})")
    if index.by_raw is not None:
        src.emit(1, "raw = fields.raw")
        src.emit(1, "if raw is not None:")
        _emit_string_test(src, "regex", index.by_raw, value="raw", depth=2)
    # Several keys hit (a user and a resource): their rules merged in rule order, without repeats.
    # The same few combinations come back event after event, so each merge is kept (bounded);
    # callers only read the list.
    merged = src.const("G", {})
    src.emit(1, "if len(found) > 1:")
    src.emit(2, "key = tuple(found)")
    src.emit(2, f"hit = {merged}.get(key)")
    src.emit(2, "if hit is None:")
    src.emit(3, "hit = sorted(set(found), key=order)")
    src.emit(3, f"if len({merged}) < MERGES:")
    src.emit(4, f"{merged}[key] = hit")
    src.emit(2, "return hit")
    src.emit(1, "return found")
    compiled: CandidatesFn = src.build("candidates", "candidates")
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
                assert cond.regex is not None
                src.emit(2, f"if {'' if cond.negate else 'not '}{src.const('S', cond.regex.search)}(value):")
            src.emit(3, "return False")
            src.emit(1, f"elif not {test}.test(value):")
        else:
            src.emit(1, f"if not {test}.test(value):")
        src.emit(2, "return False")
    src.emit(1, "return True" if raw is None else f"return {src.const('W', raw)}.test(fields.raw)")
    compiled: ConditionsFn = src.build("matches", "conditions")
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
    compiled: RenderFn = src.build("render", "description")
    return compiled


def _emit_fetch(src: _Source, path: str, depth: int = 2, from_data: bool = False) -> None:
    """`value` = the field at `path` by nested dict lookups, else through Fields.get, which also finds
    keys with dots in them (None if absent). Starts from `node`, its top-level object already
    fetched, unless `from_data`. A path without dots is one key: absent means None, no fallback."""
    if "." not in path:
        if from_data:
            src.emit(depth, f"value = data.get({src.const('T', path)})")
        else:
            src.emit(depth, "value = None if node is MISSING else node")
        return
    if from_data:
        src.emit(depth, f"node = data.get({src.const('T', path.split('.', 1)[0])}, MISSING)")
    src.emit(depth, "value = node")
    for part in path.split(".")[1:]:
        src.emit(depth, f"value = value.get({src.const('K', part)}, MISSING) if type(value) is dict else MISSING")
    src.emit(depth, "if value is MISSING:")
    src.emit(depth + 1, f"value = fields.get({src.const('P', path)})")


def _emit_string_test(src: _Source, kind: str, target: Any, value: str = "value", depth: int = 3) -> None:
    if kind == "value":
        src.emit(depth, f"hit = {src.const('B', target)}.get({value})")
        src.emit(depth, "if hit:")
        src.emit(depth + 1, "found.extend(hit)")
        return
    matcher, rules = src.const("M", target.matcher.match), src.const("R", target.rules)
    if target.prefixes is not None:
        src.emit(depth, f"if {value}.startswith({src.const('F', target.prefixes)}):")
        depth += 1
    src.emit(depth, f"for i in {matcher}({value}.encode()):")
    src.emit(depth + 1, f"found.append({rules}[i])")


# What generated code may call besides its constants.
_HELPERS: dict[str, Any] = {
    "MISSING": _MISSING, "value_hits": value_hits, "regex_hits": regex_hits, "order": RULE_ORDER,
    "field_text": field_text, "MERGES": MERGES,
}
