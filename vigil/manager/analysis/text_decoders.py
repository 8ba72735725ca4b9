"""Decoders for text log lines: YAML data (DESIGN §3), parent and child, on RE2.

A line first loses its syslog header (`syslog_header.py`). A *parent* decoder is chosen by the
header's program name (an exact name is a dict lookup; a `program_name_regex` is tried next), or,
for lines with no program (an nginx access log, dpkg.log), by a `prematch` on the message; when
nothing applies to a line that seemed to have a header, the prematch parents get the whole line. Then the
parent's *children* are tried in file order: the first whose `prematch` and `regex` both find the
message wins, and its regex's named groups become the fields. As in Wazuh, the alert names the
parent (`decoder.name`, and `decoder.parent` when a child matched); `vigil logtest` shows the child.

    decoders:
      - name: sshd
        program_name: [sshd]
      - name: sshd-failed-password
        parent: sshd
        prematch: '^Failed password for '
        regex: '^Failed password for (?:invalid user )?(?P<dstuser>\\S+) from (?P<srcip>\\S+) port (?P<srcport>\\d+)'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple

from vigil.content import CONTENT_DIR
from vigil.errors import LoadError, Problem
from vigil.manager.analysis.conditions import ConditionError, compile_regex
from vigil.manager.analysis.re2fast import Regex, SearchSet
from vigil.manager.analysis.syslog_header import SyslogHeader, parse_header
from vigil.yamlsrc import line_of, load_yaml

KEYS = frozenset({"name", "parent", "program_name", "program_name_regex", "prematch", "regex"})
PROGRAM_CACHE: Final = 10_000  # program names remembered with the parents they select


class DecoderLoadError(LoadError):
    """A decoder file is wrong; nothing was loaded."""


@dataclass
class TextDecoder:
    name: str
    parent: str | None
    program_names: tuple[str, ...]
    program_name_regex: Regex | None
    prematch: Regex | None
    regex: Regex | None
    file: str  # where it is defined, for errors
    line: int
    prematch_source: str | None = None
    regex_source: str | None = None
    children: list[TextDecoder] = field(default_factory=list)
    _children_set: SearchSet | None = None  # RE2 Set over each child's selector (prematch, else regex)

    def finds(self, message: str, data: bytes, selected: bool = False) -> dict[str, str] | None:
        """The fields this decoder reads from `message` (`data` is it in UTF-8), or None when it does not
        apply. `selected`: an RE2 Set already found the prematch (or, without one, the regex), so it
        is not tested again. Empty groups read as absent."""
        if self.prematch is not None and not selected and not self.prematch.search_bytes(data):
            return None
        if self.regex is None:
            return {}
        return self.regex.fields(message, data)

    def compile_children(self) -> None:
        """A Set over the children's selectors, unless they are one or two regexes alone: trying those
        in order costs at most what the Set pass and the winner's regex cost, and often half."""
        if len(self.children) > 2 or any(c.prematch is not None for c in self.children):
            self._children_set = _search_set([c.prematch_source or c.regex_source or "" for c in self.children])


class DecodedLine(NamedTuple):
    """What the decoders made of one line: the family (parent) name, the child that matched, fields.
    (A named tuple: one is made per line, and a frozen dataclass took several times as long.)"""

    header: SyslogHeader
    name: str | None
    child: str | None
    fields: dict[str, str]


class TextDecoders:
    """Picks the parents by program name (an exact name, then `program_name_regex`, remembered per
    name), then by one RE2 Set pass over every prematch-only parent; each parent picks its child with
    a Set of its own. An RE2 call costs about a microsecond whatever the pattern, so the Sets keep a
    line to two or three calls whatever the number of decoders (BENCHMARKS.md, log throughput)."""

    def __init__(self, decoders: list[TextDecoder]) -> None:
        self.decoders = decoders
        parents = [d for d in decoders if d.parent is None]
        self._by_program: dict[str, TextDecoder] = {}
        for parent in parents:
            for program in parent.program_names:
                self._by_program.setdefault(program, parent)
            parent.compile_children()
        self._by_program_regex = [p for p in parents if p.program_name_regex is not None]
        self._by_prematch = [p for p in parents if not p.program_names and p.program_name_regex is None]
        self._prematch_set = _search_set([p.prematch_source or "" for p in self._by_prematch])
        self._programs: dict[str, tuple[TextDecoder, ...]] = {}

    def __len__(self) -> int:
        return len(self.decoders)

    def decode(self, line: str) -> DecodedLine:
        header = parse_header(line)
        message = header.message
        data = message.encode()
        program = header.program_name
        if program is not None:
            parents = self._programs.get(program)
            for parent in self._parents_of(program) if parents is None else parents:
                if (decoded := _decode_with(parent, header, message, data, False)) is not None:
                    return decoded
        decoded = self._decode_by_prematch(header, message, data)
        if decoded is None and header.format != "none" and header.pid is None:
            # What looked like a header may be the start of a log with its own format (dnf.rpm.log's
            # `2024-05-02T10:11:12+0000 SUBDEBUG Installed: ...`): try the whole line too. A header
            # with a `program[pid]:` is a real one (and most lines no decoder wants have one).
            decoded = self._decode_by_prematch(SyslogHeader(line), line, line.encode())
        return decoded or DecodedLine(header, None, None, {})

    def _parents_of(self, program: str) -> tuple[TextDecoder, ...]:
        """The parents a program name selects, in the order they are tried: by name, then by regex."""
        parents = self._programs.get(program)
        if parents is None:
            exact = self._by_program.get(program)
            parents = (*(() if exact is None else (exact,)),
                       *(p for p in self._by_program_regex if p.program_name_regex.search(program)))  # type: ignore[union-attr]
            if len(self._programs) < PROGRAM_CACHE:
                self._programs[program] = parents
        return parents

    def _decode_by_prematch(self, header: SyslogHeader, message: str, data: bytes) -> DecodedLine | None:
        if self._prematch_set is None:
            return None
        hits = self._prematch_set.match(data)
        for index in sorted(hits) if len(hits) > 1 else hits:
            if (decoded := _decode_with(self._by_prematch[index], header, message, data, True)) is not None:
                return decoded
        return None


_new: Final = tuple.__new__  # builds a named tuple at half the cost of its __new__ (one per line)


def _decode_with(parent: TextDecoder, header: SyslogHeader, message: str, data: bytes,
                 selected: bool) -> DecodedLine | None:
    found: dict[str, str] = {}
    if parent.regex is None:  # TextDecoder.finds, inlined for the usual parent: no regex of its own
        if parent.prematch is not None and not selected and not parent.prematch.search_bytes(data):
            return None
    else:
        got = parent.finds(message, data, selected)
        if got is None:
            return None
        found = got
    # The first child, in file order, that reads the message: one Set pass picks the children whose
    # selector matches and only those run their regex, or (compile_children) each is tried in turn.
    children = parent.children
    if parent._children_set is not None:
        hits = parent._children_set.match(data)
        if not hits:
            return _new(DecodedLine, (header, parent.name, None, found))
        children = [children[hits[0]]] if len(hits) == 1 else [children[i] for i in sorted(hits)]
    for child in children:
        more = {} if child.regex is None else child.regex.fields(message, data)
        if more is not None:
            merged: dict[str, str] = {**found, **more} if found else more
            return _new(DecodedLine, (header, parent.name, child.name, merged))
    return _new(DecodedLine, (header, parent.name, None, found))


def _search_set(patterns: list[str]) -> SearchSet | None:
    """An RE2 Set that reports which of `patterns` occur in a text; None for no patterns."""
    return SearchSet(patterns) if patterns else None


def shipped_decoders_dir() -> Path:
    return CONTENT_DIR / "decoders"


def load_decoders(dirs: Iterable[Path]) -> TextDecoders:
    """Every `*.yml` in the directories, in order; a later decoder replaces an earlier one of the same
    name. Raises DecoderLoadError listing every problem; a partial set is never returned."""
    problems: list[Problem] = []
    by_name: dict[str, TextDecoder] = {}
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in sorted(p for p in directory.iterdir() if p.suffix in (".yml", ".yaml") and p.is_file()):
            try:
                doc = load_yaml(path, "decoders")
            except LoadError as exc:
                problems.extend(exc.problems)
                continue
            for decoder in _read_file(path, doc, problems):
                by_name[decoder.name] = decoder
    decoders = list(by_name.values())
    for decoder in decoders:
        if decoder.parent is None:
            continue
        parent = by_name.get(decoder.parent)
        if parent is None or parent.parent is not None:
            what = "is not defined" if parent is None else "is itself a child (one level of children only)"
            problems.append(Problem(decoder.file, decoder.line, f"parent {decoder.parent!r} {what}"))
        else:
            parent.children.append(decoder)
    if problems:
        raise DecoderLoadError("decoders", problems)
    return TextDecoders(decoders)


def _read_file(path: Path, doc: Any, problems: list[Problem]) -> list[TextDecoder]:
    if doc is None:
        return []
    if not isinstance(doc, dict) or set(doc) - {"decoders"} or not isinstance(doc.get("decoders"), list):
        problems.append(Problem(str(path), line_of(doc), "a decoder file holds one key, `decoders`: a list"))
        return []
    out = []
    for spec in doc["decoders"]:
        try:
            out.append(_decoder(path, spec))
        except (ValueError, ConditionError) as exc:
            problems.append(Problem(str(path), line_of(spec), str(exc)))
    return out


def _decoder(path: Path, spec: Any) -> TextDecoder:
    if not isinstance(spec, dict):
        raise ValueError("each decoder is a mapping with at least `name`")
    unknown = set(spec) - KEYS
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; known: {', '.join(sorted(KEYS))}")
    name, parent = spec.get("name"), spec.get("parent")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("`name` must be a non-empty string")
    if parent is not None and not isinstance(parent, str):
        raise ValueError(f"decoder {name}: `parent` must be a decoder name")
    programs = spec.get("program_name", [])
    programs = [programs] if isinstance(programs, str) else programs
    if not isinstance(programs, list) or not all(isinstance(p, str) and p for p in programs):
        raise ValueError(f"decoder {name}: `program_name` must be a name or a list of names")
    patterns = {key: _regex(name, key, spec.get(key)) for key in ("program_name_regex", "prematch", "regex")}
    if parent is None and not programs and patterns["program_name_regex"] is None and patterns["prematch"] is None:
        raise ValueError(f"decoder {name}: a parent needs `program_name`, `program_name_regex` or `prematch`")
    if parent is not None and (programs or patterns["program_name_regex"] is not None):
        raise ValueError(f"decoder {name}: a child is chosen by its parent's program; give it `prematch` or `regex`")
    if parent is not None and patterns["prematch"] is None and patterns["regex"] is None:
        raise ValueError(f"decoder {name}: a child needs `prematch` or `regex`")
    regex = patterns["regex"]
    if regex is not None and regex.groups != len(regex.groupindex):
        raise ValueError(f"decoder {name}: every group in `regex` must be named, (?P<field>...), or be (?:...)")
    return TextDecoder(name=name, parent=parent, program_names=tuple(programs),
                       program_name_regex=patterns["program_name_regex"], prematch=patterns["prematch"],
                       regex=regex, file=str(path), line=line_of(spec),
                       prematch_source=spec.get("prematch"), regex_source=spec.get("regex"))


def _regex(name: str, key: str, pattern: Any) -> Regex | None:
    if pattern is None:
        return None
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"decoder {name}: `{key}` must be a regular expression (RE2 syntax)")
    try:
        return compile_regex(pattern)
    except ConditionError as exc:
        raise ValueError(f"decoder {name}: `{key}`: {exc}") from None
