"""GET /alerts and GET /alerts/{id}: queries over the alert store (read-only role)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from vigil.api.auth import require
from vigil.api.context import ApiContext, context, errors, next_offset, page_bounds
from vigil.manager.outputs.store import AlertQuery
from vigil.timeparse import parse_time

router = APIRouter(tags=["alerts"], dependencies=[Depends(require("read-only"))])

Sort = Literal["timestamp", "-timestamp", "level", "-level", "rule_id", "-rule_id"]
RuleId = Annotated[int, Field(ge=0, le=2**31 - 1)]
# SQLite integers are 64-bit; bounding offsets keeps a silly number a 422, not a fault.
MAX_OFFSET = 2**53


class AlertPage(BaseModel):
    total: int
    offset: int
    limit: int
    next_offset: int | None
    items: list[dict[str, Any]]


@router.get("/alerts", response_model=AlertPage, responses=errors(400, 422))
def list_alerts(
    ctx: ApiContext = Depends(context),
    level: int | None = Query(None, ge=0, le=16, description="minimum rule level"),
    max_level: int | None = Query(None, ge=0, le=16, description="maximum rule level"),
    rule_id: list[RuleId] = Query(default=[], description="one or more rule ids (any of them)"),
    agent: list[str] = Query(default=[], description="agent id or name; repeat for several (any of them)"),
    group: list[str] = Query(default=[], description="a group in rule.groups; repeat for several (any of them)"),
    q: str | None = Query(None, min_length=1, max_length=200,
                          description="text in the description or anywhere in the alert (case-insensitive)"),
    since: str | None = Query(None, description="epoch, ISO 8601, or an age like 15m"),
    until: str | None = Query(None, description="epoch, ISO 8601, or an age like 15m"),
    sort: Sort | None = Query(None, description="field to sort by, '-' first for descending (default -timestamp)"),
    order: Literal["asc", "desc"] | None = Query(
        None, description="without `sort`: the order the alerts were stored in (older form of sort)"),
    limit: int = Query(100, ge=1, description="page size, at most api.max_page_size"),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> dict[str, Any]:
    page_bounds(ctx, limit)
    if sort is None and order is None:
        sort = "-timestamp"
    query = AlertQuery(
        min_level=level, max_level=max_level, rule_ids=tuple(rule_id), since=_time(since, "since"),
        until=_time(until, "until"), agents=tuple(agent), groups=tuple(group), text=q, sort=sort,
        newest_first=order != "asc", limit=limit, offset=offset,
    )
    total, rows = ctx.alerts().query(query)
    return {"total": total, "offset": offset, "limit": limit, "next_offset": next_offset(offset, len(rows), total),
            "items": [alert for _, alert in rows]}


@router.get("/alerts/{alert_id}", response_model=dict[str, Any], responses=errors(404))
def get_alert(alert_id: str, ctx: ApiContext = Depends(context)) -> dict[str, Any]:
    alert = ctx.alerts().get(alert_id)
    if alert is None:
        raise HTTPException(404, f"no alert with id {alert_id!r}")
    return alert


def _time(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except (ValueError, OverflowError) as exc:
        raise HTTPException(400, f"{name}: {exc}") from None
