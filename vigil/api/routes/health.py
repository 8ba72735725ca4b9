"""GET /health and GET /metrics (read-only role): what a person and what Prometheus check."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from vigil.api.auth import require
from vigil.api.context import ApiContext, context, errors
from vigil.api.metrics import CONTENT_TYPE, render

router = APIRouter(tags=["health"], dependencies=[Depends(require("read-only"))])


@router.get("/health", response_model=dict[str, Any], responses=errors())
def get_health(ctx: ApiContext = Depends(context)) -> dict[str, Any]:
    return ctx.backend.health()


@router.get("/metrics", response_class=Response, responses={
    200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
    **errors(),
})
def get_metrics(ctx: ApiContext = Depends(context)) -> Response:
    return Response(render(ctx.backend.metrics), media_type=CONTENT_TYPE)
