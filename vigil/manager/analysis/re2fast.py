"""RE2 called just below google-re2's Python wrapper, which costs more than the match itself.

The wrapper's `search` encodes the text, converts every span back to characters and builds a match
object; `groupdict` rebuilds the group index on each call: about 2 µs per call, where the C++
call takes under 1 µs on a log line (BENCHMARKS.md, log analysis). Here a line is encoded once,
spans are byte offsets, and group names are read once at compile time. Semantics are RE2's, as
through the wrapper: the same pattern, options and UTF-8 text give the same answers.

A rule's regex is compiled when the rule is loaded (so a bad one is refused then) and again only
when first used: thousands of rules that rarely fire then cost their source text, not an RE2
program each (about 3 KB).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Final

import re2
from re2 import _re2

_UNANCHORED: Final = _re2.RE2.Anchor.UNANCHORED


class RegexError(ValueError):
    """A pattern RE2 does not accept; the message is RE2's reason."""


def re2_options() -> Any:
    """RE2 options that keep its C++ logging off stderr; errors are reported by the loaders instead."""
    options = re2.Options()
    options.log_errors = False
    return options


_OPTIONS: Final = re2_options()


def _compile(pattern: str) -> Any:
    prog = _re2.RE2(pattern.encode(), _OPTIONS)
    if not prog.ok():
        error = prog.error()
        raise RegexError(error.decode(errors="replace") if isinstance(error, bytes) else str(error))
    return prog


_REGEX_META: Final = frozenset("\\.^$|?*+()[]{}")


def literal_prefix(pattern: str) -> str:
    """The literal text an anchored regex must start with (`^exec_start: (a|b)` -> `exec_start: `)."""
    if not pattern.startswith("^") or _has_top_level_alternation(pattern):
        return ""
    end = 1
    while end < len(pattern) and pattern[end] not in _REGEX_META:
        end += 1
    if end < len(pattern) and pattern[end] in "?*{":
        end -= 1  # the last literal is optional or repeated
    return pattern[1:end]


def _has_top_level_alternation(pattern: str) -> bool:
    """`^a|b` is `(^a)|(b)`: no prefix can be promised then."""
    depth, i, in_class = 0, 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return True
        i += 1
    return False


class Regex:
    """One RE2 pattern: `search` says whether it occurs; `fields` reads its named groups."""

    __slots__ = ("_keys", "_names", "_pick", "_prefix", "_prefix_bytes", "_prog", "groups", "pattern")

    def __init__(self, pattern: str, lazy: bool = False) -> None:
        prog = _compile(pattern)  # raises RegexError now, not at the first event
        self.pattern = pattern
        self.groups: int = prog.NumberOfCapturingGroups()
        # (span index, name) in the order the wrapper's groupdict gives them (by name), kept only
        # for patterns with groups.
        self._names: tuple[tuple[int, str], ...] = tuple(
            (index, name.decode()) for name, index in prog.NamedCapturingGroups()
        )
        self._keys = tuple(name for _, name in self._names)
        self._pick = _picker([index for index, _ in self._names])
        self._prog: Any = None if lazy else prog
        # `^literal...`: a text that does not start with the literal is refused without calling RE2
        # (a call costs more than the match on a short field).
        self._prefix = literal_prefix(pattern)
        self._prefix_bytes = self._prefix.encode()

    @property
    def groupindex(self) -> dict[str, int]:
        return {name: index for index, name in self._names}

    def _ready(self) -> Any:
        prog = self._prog
        if prog is None:
            prog = self._prog = _compile(self.pattern)
        return prog

    def search(self, text: str) -> bool:
        """True when the pattern occurs in `text` (`re2.search(...) is not None`)."""
        if not text.startswith(self._prefix):
            return False
        return self.search_bytes(text.encode())

    def search_bytes(self, data: bytes) -> bool:
        """`search` on a text already encoded as UTF-8."""
        if not data.startswith(self._prefix_bytes):
            return False
        prog = self._prog or self._ready()
        return prog.Match(_UNANCHORED, data, 0, len(data))[0][0] >= 0  # type: ignore[no-any-return]

    def fields(self, text: str, data: bytes) -> dict[str, str] | None:
        """The named groups that matched something in `text` (`data` is `text` encoded, given once per
        line), or None when the pattern does not occur. Empty groups read as absent."""
        prog = self._prog or self._ready()
        spans = prog.Match(_UNANCHORED, data, 0, len(data))
        if spans[0][0] < 0:
            return None
        named = zip(self._keys, self._pick(spans), strict=True)
        if len(data) == len(text):  # ASCII: byte offsets are character offsets
            return {name: text[start:end] for name, (start, end) in named if end > start}
        return {name: data[start:end].decode() for name, (start, end) in named if end > start}


Spans = list[tuple[int, int]]


def _no_spans(spans: Spans) -> tuple[tuple[int, int], ...]:
    return ()


def _picker(indexes: list[int]) -> Callable[[Spans], tuple[tuple[int, int], ...]]:
    """The named groups' spans out of all spans, as a tuple, in one C call (shared when there are none)."""
    if not indexes:
        return _no_spans
    if len(indexes) == 1:
        index = indexes[0]
        return lambda spans: (spans[index],)
    return operator.itemgetter(*indexes)


class SearchSet:
    """Many patterns in one RE2 pass (`re2.Set`): which of them occur in a text, by index."""

    __slots__ = ("_set", "match", "size")

    def __init__(self, patterns: list[str]) -> None:
        matcher = _re2.Set(_UNANCHORED, _OPTIONS)
        for pattern in patterns:
            if matcher.Add(pattern.encode()) < 0:
                raise RegexError(f"RE2 Set refused {pattern!r}")
        if not matcher.Compile():
            raise RegexError("RE2 Set did not compile")
        self._set = matcher
        self.size = len(patterns)
        # Indexes of the patterns found in `data` (UTF-8), in no particular order: RE2's own method,
        # with no Python frame around it.
        self.match: Callable[[bytes], list[int]] = matcher.Match

    def match_text(self, text: str) -> list[int]:
        return self._set.Match(text.encode())  # type: ignore[no-any-return]
