"""The HTTP API: thin routes over a Backend (DESIGN §4), behind auth and limits; every error is JSON."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vigil import __version__
from vigil.api.auth import Authenticator, open_authenticator
from vigil.api.backend import Backend
from vigil.api.context import ApiContext
from vigil.api.limits import BodyLimit, Buckets, RateLimit
from vigil.api.routes import agents, alerts, auth, health, rules
from vigil.config import ApiConfig

DESCRIPTION = """Vigil manager API.

Send `Authorization: Bearer <token or API key>` (or `X-API-Key: <key>`) with every request except
`POST /auth/login`. Roles: `read-only` reads everything; `admin` may also remove agents and send
them commands. Errors are JSON: `{"error": "<what is wrong>"}`.
"""


def create_app(backend: Backend, config: ApiConfig, data_dir: Path, *, clock: Callable[[], float] = time.time,
               authenticator: Authenticator | None = None) -> FastAPI:
    """The API for one running Vigil; users, keys and the token secret live under `data_dir`/api.

    `clock` is the time tokens are issued and checked against (tests pass their own, to expire a
    token without waiting); `authenticator` replaces the one opened from `data_dir`.
    """
    app = FastAPI(title="Vigil", version=__version__, description=DESCRIPTION)
    auth_ = authenticator or open_authenticator(data_dir, config.token_ttl_seconds, clock)
    per_minute = config.login_attempts_per_minute
    app.state.ctx = ApiContext(backend, config, auth_, Buckets(per_minute / 60.0, per_minute))
    app.state.auth = auth_
    for module in (health, auth, agents, alerts, rules):
        app.include_router(module.router)
    _error_handlers(app)
    # The last added runs first: a flood is refused before its body is read.
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(RateLimit, buckets=Buckets(config.rate_per_second, config.rate_burst))
    return app


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.url.path} (see /openapi.json)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        elif exc.status_code == 400 and message == "There was an error parsing the body":
            message = "the request body could not be read: send JSON in UTF-8"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "invalid request", "problems": problems}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)
