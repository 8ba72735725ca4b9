"""Field access by dotted path into an event's data, tolerant of keys that contain dots."""

from __future__ import annotations

import sys
from typing import Any, Final

_MISSING: Final = object()


class Fields:
    """Resolves `docker.Actor.Attributes.role.new` against nested data, caching each path once.

    Docker labels and Wazuh field names put dots inside keys (`com.docker.compose.project`,
    `role.new`), so a path segment that is not a key is joined with the next ones until one is.
    """

    __slots__ = ("_dotted_top", "data", "raw", "resolved")

    def __init__(self, data: dict[str, Any], raw: str | None = None) -> None:
        self.data = data
        self.raw = raw
        # path -> value, filled by get() so a path is resolved once per event
        self.resolved: dict[str, Any] = {}
        self._dotted_top: bool | None = None

    def lacks_top(self, key: str) -> bool:
        """True when no field can start with `key`: the cheap test indexes make before a lookup."""
        if key in self.data:
            return False
        if self._dotted_top is None:
            dotted = False
            for top in self.data:  # a plain loop: compiled, it allocates nothing
                if isinstance(top, str) and "." in top:  # a key that is not text cannot hold a dot
                    dotted = True
                    break
            self._dotted_top = dotted
        return not self._dotted_top

    def lookup(self, path: str, parts: tuple[str, ...]) -> Any:
        """get(path), given `parts` (path split at its dots): direct dict lookups first, which
        compiled are a loop in C; only a walk that misses falls back to get()."""
        if not parts:
            return self.get(path)
        node: Any = self.data
        for part in parts:
            node = node.get(part, _MISSING) if type(node) is dict else _MISSING
            if node is _MISSING:
                return self.get(path) if len(parts) > 1 else None  # one key: absent is absent
        return node

    def get(self, path: str) -> Any:
        """The value at `path`, or None when absent."""
        value = self.resolved.get(path, _MISSING)
        if value is not _MISSING:
            return value
        node: Any = self.data
        parts = _SPLITS.get(path) or split_path(path)
        for part in parts:
            if type(node) is dict and part in node:
                node = node[part]
            else:  # a key with dots in it (anywhere on the path), or absent
                node = _resolve(self.data, list(parts))
                break
        value = None if node is _MISSING else node
        self.resolved[path] = value
        return value


_SPLITS: Final[dict[str, tuple[str, ...]]] = {}


def split_path(path: str) -> tuple[str, ...]:
    """`a.b.c` -> ("a", "b", "c"). Paths come from a fixed rule set, so their split form is kept
    (bounded, in case they don't). The parts are interned: a key of the same text in an event's
    dict is often the same object, found by identity without comparing the text."""
    parts = _SPLITS.get(path)
    if parts is None:
        parts = tuple(sys.intern(part) for part in path.split("."))
        if len(_SPLITS) < 100_000:
            _SPLITS[path] = parts
    return parts


def _resolve(node: Any, parts: list[str]) -> Any:
    if not parts:
        return node
    if not isinstance(node, dict):
        return _MISSING
    for end in range(1, len(parts) + 1):
        key = ".".join(parts[:end])
        if key in node:
            found = _resolve(node[key], parts[end:])
            if found is not _MISSING:
                return found
    return _MISSING


def as_text(value: Any) -> str:
    """How a field value compares and renders: booleans as true/false, numbers without noise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
