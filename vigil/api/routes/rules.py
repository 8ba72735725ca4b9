"""GET /rules and GET /rules/{id}: the loaded rule set (read-only role)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel

from vigil.api.auth import require
from vigil.api.context import ApiContext, context, errors, page_bounds
from vigil.manager.analysis.rules import Rule

router = APIRouter(tags=["rules"], dependencies=[Depends(require("read-only"))])


class RuleSummary(BaseModel):
    id: int
    level: int
    description: str
    groups: list[str]
    file: str


class RuleDetail(RuleSummary):
    line: int
    if_sid: list[int]
    if_group: str | None
    mitre: list[str]
    compliance: dict[str, list[str]]
    frequency: int | None
    timeframe: float | None


class RulePage(BaseModel):
    """`total` counts every matching rule; the next page starts at offset + len(items) while that is < total."""

    total: int
    items: list[RuleSummary]


def _summary(rule: Rule) -> dict[str, Any]:
    return {"id": rule.id, "level": rule.level, "description": rule.description, "groups": list(rule.groups),
            "file": Path(rule.file).name}


@router.get("/rules", response_model=RulePage, responses=errors(400, 422))
def list_rules(
    ctx: ApiContext = Depends(context),
    group: str | None = Query(None, description="only rules that carry this group"),
    level: int | None = Query(None, ge=0, le=16, description="only rules at this level or above"),
    limit: int | None = Query(None, ge=1, description="page size (default: all), at most api.max_page_size"),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    if limit is not None:
        page_bounds(ctx, limit)
    matching = [
        rule for rule in sorted(ctx.backend.rules.rules.values(), key=lambda r: r.id)
        if (group is None or group in rule.groups) and (level is None or rule.level >= level)
    ]
    shown = matching[offset:] if limit is None else matching[offset:offset + limit]
    return {"total": len(matching), "items": [_summary(rule) for rule in shown]}


@router.get("/rules/{rule_id}", response_model=RuleDetail, responses=errors(404, 422))
def get_rule(rule_id: int, ctx: ApiContext = Depends(context)) -> dict[str, Any]:
    rule = ctx.backend.rules.rules.get(rule_id)
    if rule is None:
        raise HTTPException(404, f"no rule with id {rule_id}")
    return {**_summary(rule), "line": rule.line, "if_sid": list(rule.if_sid), "if_group": rule.if_group,
            "mitre": list(rule.mitre), "compliance": {k: list(v) for k, v in rule.compliance.items()},
            "frequency": rule.frequency, "timeframe": rule.timeframe}
