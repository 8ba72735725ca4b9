"""Field access by dotted path into an event's data, tolerant of keys that contain dots."""

from __future__ import annotations

from typing import Any

_MISSING = object()


class Fields:
    """Resolves `docker.Actor.Attributes.role.new` against nested data, caching each path once.

    Docker labels and Wazuh field names put dots inside keys (`com.docker.compose.project`,
    `role.new`), so a path segment that is not a key is joined with the next ones until one is.
    """

    __slots__ = ("_cache", "data", "raw")

    def __init__(self, data: dict[str, Any], raw: str | None = None) -> None:
        self.data = data
        self.raw = raw
        self._cache: dict[str, Any] = {}

    def get(self, path: str) -> Any:
        """The value at `path`, or None when absent."""
        try:
            return self._cache[path]
        except KeyError:
            pass
        value = _resolve(self.data, path.split("."))
        if value is _MISSING:
            value = None
        self._cache[path] = value
        return value


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
