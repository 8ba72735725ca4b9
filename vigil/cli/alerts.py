"""`vigil alerts`: read alerts from the store as a table or JSON lines, optionally following."""

from __future__ import annotations

import time
from typing import Any

import orjson
from rich.table import Table

from vigil.cli.common import console, fail
from vigil.config import VigilConfig
from vigil.manager.outputs.store import AlertQuery, AlertReader
from vigil.timeparse import parse_time

_LEVEL_STYLE = [(12, "bold red"), (8, "red"), (5, "yellow"), (0, "")]


def show_alerts(cfg: VigilConfig, query: AlertQuery, follow: bool, as_json: bool) -> None:
    if not cfg.db_path.exists():
        raise fail(f"no alert store at {cfg.db_path}: start Vigil with `vigil up` (or pass --data-dir)")
    reader = AlertReader(cfg.db_path)
    try:
        total, rows = reader.query(query)
        rows.reverse()  # oldest first on screen
        _print(rows, as_json, total if not follow else None, query.limit)
        if not follow:
            return
        last = max((seq for seq, _ in rows), default=_newest_seq(reader))
        while True:
            time.sleep(0.5)
            page = AlertQuery(min_level=query.min_level, rule_ids=query.rule_ids, after_seq=last, limit=1000,
                              newest_first=False)
            _, new = reader.query(page)
            if new:
                _print(new, as_json, None, 0)
                last = new[-1][0]
    except KeyboardInterrupt:
        return
    finally:
        reader.close()


def _newest_seq(reader: AlertReader) -> int:
    _, rows = reader.query(AlertQuery(limit=1))
    return rows[0][0] if rows else 0


def _print(rows: list[tuple[int, dict[str, Any]]], as_json: bool, total: int | None, limit: int) -> None:
    if as_json:
        for _, alert in rows:
            console.out(orjson.dumps(alert).decode(), highlight=False)
        return
    if not rows:
        if total is not None:
            console.print("no alerts match", highlight=False)
        return
    table = Table(show_header=total is not None, box=None, pad_edge=False)
    for column in ("time (UTC)", "level", "rule", "agent", "description"):
        table.add_column(column, no_wrap=column != "description")
    for _, alert in rows:
        level = int(alert["rule"]["level"])
        style = next(s for floor, s in _LEVEL_STYLE if level >= floor)
        table.add_row(alert["timestamp"][:23].replace("T", " "), str(level), alert["rule"]["id"],
                      alert["agent"].get("name", ""), alert["rule"]["description"], style=style)
    console.print(table)
    if total is not None and total > len(rows):
        console.print(f"showing {len(rows)} of {total} alerts (newest); use --limit to see more", highlight=False)


def time_option(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise fail(f"--{name}: {exc}") from None
