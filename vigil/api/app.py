"""The HTTP API: thin routes over the runtime (DESIGN §4). Every error is JSON a person can read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vigil import __version__
from vigil.manager.analysis.rule_loader import LoadedRules
from vigil.manager.outputs.store import AlertQuery, AlertReader
from vigil.timeparse import parse_time


def create_app(health: Callable[[], dict[str, Any]], db_path: Path, rules: LoadedRules,
               max_page_size: int = 1000) -> FastAPI:
    app = FastAPI(title="Vigil", version=__version__, description="Vigil manager API")
    reader = AlertReader(db_path)
    app.state.reader = reader

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.url.path} (see /openapi.json)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "invalid request", "problems": problems}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.get("/health")
    def get_health() -> dict[str, Any]:
        return health()

    @app.get("/alerts")
    def list_alerts(
        level: int | None = Query(None, ge=0, le=16, description="minimum rule level"),
        max_level: int | None = Query(None, ge=0, le=16),
        rule_id: list[int] = Query(default=[], description="one or more rule ids"),
        since: str | None = Query(None, description="epoch, ISO 8601, or an age like 15m"),
        until: str | None = Query(None),
        limit: int = Query(100, ge=1),
        offset: int = Query(0, ge=0),
        order: str = Query("desc", pattern="^(asc|desc)$"),
    ) -> dict[str, Any]:
        if limit > max_page_size:
            raise HTTPException(400, f"limit {limit} is above the maximum page size {max_page_size}")
        query = AlertQuery(
            min_level=level, max_level=max_level, rule_ids=tuple(rule_id), since=_time(since, "since"),
            until=_time(until, "until"), limit=limit, offset=offset, newest_first=order == "desc",
        )
        total, rows = reader.query(query)
        next_offset = offset + len(rows) if offset + len(rows) < total else None
        return {"total": total, "offset": offset, "limit": limit, "next_offset": next_offset,
                "items": [alert for _, alert in rows]}

    @app.get("/alerts/{alert_id}")
    def get_alert(alert_id: str) -> dict[str, Any]:
        alert = reader.get(alert_id)
        if alert is None:
            raise HTTPException(404, f"no alert with id {alert_id!r}")
        return alert

    @app.get("/rules")
    def list_rules(group: str | None = None, level: int | None = Query(None, ge=0, le=16)) -> dict[str, Any]:
        items = [
            {"id": r.id, "level": r.level, "description": r.description, "groups": list(r.groups),
             "file": Path(r.file).name}
            for r in sorted(rules.rules.values(), key=lambda r: r.id)
            if (group is None or group in r.groups) and (level is None or r.level >= level)
        ]
        return {"total": len(items), "items": items}

    return app


def _time(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise HTTPException(400, f"{name}: {exc}") from None
