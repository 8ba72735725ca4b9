"""What every route reaches through `request.app.state.ctx`: built once by `create_app`, never global."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from pydantic import BaseModel

from vigil.api.auth import Authenticator
from vigil.api.backend import Backend
from vigil.api.limits import Buckets
from vigil.config import ApiConfig
from vigil.manager.outputs.store import AlertReader


@dataclass
class ApiContext:
    backend: Backend
    config: ApiConfig
    auth: Authenticator
    logins: Buckets  # failed logins per user name and client address
    reader: AlertReader | None = None  # opened on first use: the store may not exist before the first alert

    def alerts(self) -> AlertReader:
        if self.reader is None:
            self.reader = AlertReader(self.backend.db_path)
        return self.reader


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


class ErrorBody(BaseModel):
    """Every error: `error` is a sentence for a person; some errors add fields (problems, retry_after_seconds)."""

    error: str
    problems: list[str] | None = None


_WHY = {
    400: "a value Vigil cannot use (the message says which)",
    401: "no credentials, or a token or key that is not valid (expired, revoked, unknown)",
    403: "the caller's role does not allow this",
    404: "no such item",
    409: "the item cannot be changed that way",
    413: "the request body is larger than api.max_body_bytes",
    422: "a parameter of the wrong type or out of range",
    429: "too many requests; see the Retry-After header",
    502: "the agent answered with an error or could not be reached",
    504: "the agent did not answer in time",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route can answer (401, 413, 429 are always possible)."""
    return {code: {"model": ErrorBody, "description": _WHY[code]} for code in sorted({401, 413, 429, *codes})}


def page_bounds(ctx: ApiContext, limit: int) -> None:
    if limit > ctx.config.max_page_size:
        raise HTTPException(400, f"limit {limit} is above the maximum page size {ctx.config.max_page_size}")


def next_offset(offset: int, shown: int, total: int) -> int | None:
    return offset + shown if offset + shown < total else None
