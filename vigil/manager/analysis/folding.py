"""Folds identical alerts repeated within a window into one follow-up carrying `firedtimes`."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

MAX_OPEN_FOLDS = 50_000


@dataclass(slots=True)
class _Fold:
    first: dict[str, Any]
    started: float
    last: float
    count: int


class Folder:
    """The first alert of a kind goes out at once; repeats within `window` seconds are counted.

    When the window closes with repeats, one follow-up alert goes out whose `rule.firedtimes`
    is the number of occurrences and whose `vigil.fold` names the first alert. Two alerts are
    identical when rule, agent, location, description and data (less `ignore` fields) agree.
    """

    def __init__(self, window: float, ignore: Iterable[str]) -> None:
        self.window = window
        self.ignore = [path.split(".") for path in ignore]
        self._open: OrderedDict[bytes, _Fold] = OrderedDict()
        self.folded = 0

    def key(self, alert: dict[str, Any]) -> bytes:
        data = _without(alert.get("data", {}), self.ignore)
        return orjson.dumps(
            [alert["rule"]["id"], alert["agent"]["id"], alert.get("location"), alert["rule"]["description"],
             data, alert.get("full_log")],
            option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
        )

    def admit(self, alert: dict[str, Any], now: float) -> tuple[bool, list[tuple[dict[str, Any], _Fold]]]:
        """(emit this alert?, folds closed by this call)."""
        if self.window <= 0:
            return True, []
        closed = self.expire(now)
        key = self.key(alert)
        fold = self._open.get(key)
        if fold is not None:
            fold.count += 1
            fold.last = now
            self.folded += 1
            return False, closed
        self._open[key] = _Fold(first=alert, started=now, last=now, count=1)
        if len(self._open) > MAX_OPEN_FOLDS:
            _, oldest = self._open.popitem(last=False)
            if oldest.count > 1:
                closed.append((oldest.first, oldest))
        return True, closed

    def expire(self, now: float) -> list[tuple[dict[str, Any], _Fold]]:
        closed = []
        while self._open:
            key, fold = next(iter(self._open.items()))
            if now - fold.started < self.window:
                break
            del self._open[key]
            if fold.count > 1:
                closed.append((fold.first, fold))
        return closed

    def drain(self) -> list[tuple[dict[str, Any], _Fold]]:
        closed = [(f.first, f) for f in self._open.values() if f.count > 1]
        self._open.clear()
        return closed


def _without(data: Any, paths: list[list[str]]) -> Any:
    if not paths or not isinstance(data, dict):
        return data
    out = dict(data)
    for path in paths:
        _drop(out, path)
    return out


def _drop(node: dict[str, Any], path: list[str]) -> None:
    head, rest = path[0], path[1:]
    if head not in node:
        return
    if not rest:
        del node[head]
    elif isinstance(node[head], dict):
        child = dict(node[head])
        node[head] = child
        _drop(child, rest)
