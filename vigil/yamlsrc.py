"""YAML reading that remembers line numbers, so every loader can say `file:line: what is wrong`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vigil.errors import LoadError, Problem


class LineDict(dict[str, Any]):
    """A mapping from a YAML file that knows the line it starts on and the line of each key."""

    line: int
    key_lines: dict[str, int]


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
        if not isinstance(key, str | int | float | bool) or key is None:
            raise yaml.constructor.ConstructorError(
                None, None, f"mapping key must be a string, found {key!r}", key_node.start_mark
            )
        key = str(key)
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in this mapping", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)  # type: ignore[no-untyped-call]
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: Path, what: str, max_bytes: int = 16 * 1024 * 1024) -> Any:
    """Parse one YAML file; syntax errors become a LoadError with the file and line."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise LoadError(what, [Problem(str(path), 1, f"file is {size} bytes, larger than {max_bytes}")])
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LoadError(what, [Problem(str(path), 1, f"not UTF-8 text: {exc.reason}")]) from exc
    except OSError as exc:
        raise LoadError(what, [Problem(str(path), 1, f"cannot read: {exc.strerror}")]) from exc
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        message = f"YAML syntax: {exc.problem or exc}"
        if exc.context:
            where = f" started on line {exc.context_mark.line + 1}" if exc.context_mark else ""
            message += f" ({exc.context}{where})"
        raise LoadError(what, [Problem(str(path), line, message)]) from exc
    except yaml.YAMLError as exc:
        raise LoadError(what, [Problem(str(path), 1, f"YAML: {exc}")]) from exc


def line_of(obj: Any, key: str | None = None, default: int = 1) -> int:
    """The line of a mapping (or of one of its keys) read by load_yaml."""
    if isinstance(obj, LineDict):
        if key is not None and key in obj.key_lines:
            return obj.key_lines[key]
        return obj.line
    return default


def line_at(root: Any, loc: tuple[int | str, ...]) -> int:
    """Best line for a pydantic error location inside a document read by load_yaml."""
    line = line_of(root)
    node = root
    for part in loc:
        if isinstance(node, LineDict) and isinstance(part, str) and part in node:
            line = line_of(node, part, line)
            node = node[part]
        elif isinstance(node, LineDict) and isinstance(part, str):
            return line_of(node, part, line)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            line = line_of(node, None, line)
        else:
            break
    return line
