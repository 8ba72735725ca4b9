"""Rule files held as pickles between parsing and building, so the YAML parser's memory is freed.

The YAML parser leaves tens of MB of short-lived objects per large file, and any object made
meanwhile that outlives them (a string a rule keeps, a small result) pins that memory in Python's
allocator for good. So a parsed file is kept as one large buffer, the parser is collected, and rules
are built from copies read back one at a time, each copy's leftovers reused by the next (RSS for
2,000 rules: 41 MB parsing and building directly, 5 MB this way; BENCHMARKS.md, log analysis).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vigil.errors import LoadError, Problem
from vigil.yamlsrc import load_yaml

SpecsOf = Callable[[Path, Any, list[Problem]], list[Any]]


def pack(path: Path, problems: list[Problem], specs_of: SpecsOf) -> bytes | None:
    """A rule file as pickles, one after the other: its path, the problems with its shape (from
    `specs_of`, which also picks out the rules), the document without its rules (for `lists`),
    each rule's mapping, then None. A file that does not parse adds its problems, gives None."""
    try:
        doc = load_yaml(path, "rules")
    except LoadError as exc:
        problems.extend(exc.problems)
        return None
    shape: list[Problem] = []
    specs = specs_of(path, doc, shape)
    if isinstance(doc, dict):
        doc.pop("rules", None)
    out = io.BytesIO()
    for item in (path, shape, doc, *specs, None):
        pickle.dump(item, out, pickle.HIGHEST_PROTOCOL)
    return out.getvalue()


class RuleBuffer:
    """One packed file read back: its path, shape problems and head now, its rules one at a time."""

    def __init__(self, blob: bytes) -> None:
        self._stream = io.BytesIO(blob)
        self.path: Path = pickle.load(self._stream)
        self.shape: list[Problem] = pickle.load(self._stream)
        self.head: Any = pickle.load(self._stream)

    def specs(self) -> Iterator[Any]:
        while (spec := pickle.load(self._stream)) is not None:
            yield spec
