"""POST /auth/login: a user name and password for a short-lived token. Open to all, limited per user and address."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from vigil.api.context import ApiContext, context, errors
from vigil.api.limits import retry_after

log = logging.getLogger(__name__)
router = APIRouter(tags=["auth"])


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    # Bounded so one request cannot make scrypt hash megabytes.
    password: str = Field(min_length=1, max_length=1024)


class Token(BaseModel):
    token: str
    token_type: str
    expires_in: int
    role: str


@router.post("/auth/login", response_model=Token, responses=errors(400, 422), openapi_extra={"security": []})
def login(body: Login, request: Request, ctx: ApiContext = Depends(context)) -> dict[str, Any]:
    address = request.client.host if request.client else "unknown"
    key = f"{body.username}\0{address}"
    wait = ctx.logins.wait(key)
    if wait > 0:
        after = retry_after(wait)
        raise HTTPException(429, f"too many failed logins for {body.username!r} from {address}: try again in "
                                 f"{after} s", headers={"Retry-After": after})
    user = ctx.auth.store.check_password(body.username, body.password)
    if user is None:
        ctx.logins.take(key)
        log.warning("failed API login for %r from %s", body.username, address)
        raise HTTPException(401, "wrong user name or password", headers={"WWW-Authenticate": "Bearer"})
    log.info("API login: %s (%s) from %s", user.name, user.role, address)
    return {"token": ctx.auth.issue(user), "token_type": "bearer", "expires_in": int(ctx.auth.ttl_seconds),
            "role": user.role}
