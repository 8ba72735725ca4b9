"""Who is calling: login tokens (JWT, HS256) for people, API keys for machines, and two roles.

Both travel as `Authorization: Bearer ...` (a key may also come as `X-API-Key`). Every request
checks the current auth database, so removing a user or revoking a key takes effect at once.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from vigil.api.auth_store import (
    ADMIN_KEY_FILE,
    AUTH_DB,
    KEY_PREFIX,
    AuthStore,
    Role,
    User,
    auth_dir,
    write_private,
)

log = logging.getLogger(__name__)

SECRET_FILE = "token.secret"
BOOTSTRAP_KEY_NAME = "local-admin"
ALGORITHM = "HS256"
_RANK: dict[str, int] = {"read-only": 0, "admin": 1}

bearer_scheme = HTTPBearer(auto_error=False, description="a login token from POST /auth/login, or an API key")
key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    name: str
    kind: Literal["user", "key"]
    role: Role


def _unauthorized(message: str, error: str | None = None) -> HTTPException:
    challenge = "Bearer" if error is None else f'Bearer error="{error}", error_description="{message}"'
    return HTTPException(401, message, headers={"WWW-Authenticate": challenge})


class Authenticator:
    """Issues and checks tokens; `clock` is injectable so expiry can be tested without waiting."""

    def __init__(self, store: AuthStore, secret: bytes, ttl_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._secret = secret
        self.ttl_seconds = ttl_seconds
        self.clock = clock

    def issue(self, user: User) -> str:
        now = int(self.clock())
        claims = {"sub": user.name, "role": user.role, "uid": user.token_id, "iat": now,
                  "exp": now + int(self.ttl_seconds), "jti": secrets.token_hex(8)}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def authenticate(self, credential: str | None) -> Principal:
        """The caller behind a token or key; raises a 401 HTTPException saying what is wrong."""
        if not credential:
            raise _unauthorized("authentication required: send 'Authorization: Bearer <token or API key>' "
                                "(get a token with POST /auth/login)")
        if credential.startswith(KEY_PREFIX):
            account = self.store.check_key(credential)
            if account is None:
                raise _unauthorized("the API key is not valid (unknown or revoked)", "invalid_token")
            return Principal(account.name, "key", account.role)
        return self._check_token(credential)

    def _check_token(self, token: str) -> Principal:
        try:
            # Expiry is checked below against self.clock, so tests need not wait for real time to pass.
            claims: dict[str, Any] = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM],
                options={"verify_exp": False, "verify_iat": False, "require": ["exp", "iat", "sub", "uid"]},
            )
        except jwt.PyJWTError:
            raise _unauthorized("the token is not valid: log in again with POST /auth/login",
                                "invalid_token") from None
        exp = claims["exp"]
        if not isinstance(exp, int | float) or exp <= self.clock():
            raise _unauthorized("the token has expired: log in again with POST /auth/login", "invalid_token")
        user = self.store.user(str(claims["sub"]))
        if user is None or not hmac.compare_digest(user.token_id, str(claims["uid"])):
            raise _unauthorized(f"the user {claims['sub']!r} no longer exists", "invalid_token")
        return Principal(user.name, "user", user.role)


def _credential(request: Request, bearer: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
                api_key: str | None = Security(key_scheme)) -> str | None:
    if bearer is not None:
        return bearer.credentials
    if request.headers.get("authorization"):
        raise _unauthorized("the Authorization header must be 'Bearer <token or API key>'")
    return api_key


def require(role: Role) -> Callable[..., Principal]:
    """A FastAPI dependency: the caller, who must hold `role` (admin holds read-only too)."""

    def dependency(request: Request, credential: str | None = Security(_credential)) -> Principal:
        authenticator: Authenticator = request.app.state.auth
        principal = authenticator.authenticate(credential)
        if _RANK[principal.role] < _RANK[role]:
            raise HTTPException(403, f"{principal.kind} {principal.name!r} has the role {principal.role!r}; "
                                     f"this needs {role!r}")
        return principal

    return dependency


def load_secret(directory: Path) -> bytes:
    """The token signing secret: made once, random, readable by the owner only."""
    path = directory / SECRET_FILE
    if not path.exists():
        write_private(path, secrets.token_bytes(32))
    secret = path.read_bytes()
    if len(secret) < 32:
        raise ValueError(f"{path} is shorter than 32 bytes; delete it and Vigil makes a new one")
    return secret


def ensure_admin_key(store: AuthStore, directory: Path) -> Path | None:
    """With no admin key at all, make one and leave it where the local CLI finds it; its path, or None."""
    if store.has_admin_key():
        return None
    names = {account.name for account in store.list_keys()}
    name = BOOTSTRAP_KEY_NAME
    suffix = 2
    while name in names:
        name, suffix = f"{BOOTSTRAP_KEY_NAME}-{suffix}", suffix + 1
    key = store.add_key(name, "admin")
    path = directory / ADMIN_KEY_FILE
    write_private(path, (key + "\n").encode())
    return path


def open_authenticator(data_dir: Path, ttl_seconds: float, clock: Callable[[], float] = time.time) -> Authenticator:
    """The auth database, secret and (first start) the admin key under DATA_DIR/api."""
    directory = auth_dir(data_dir)
    store = AuthStore(directory / AUTH_DB)
    created = ensure_admin_key(store, directory)
    if created is not None:
        log.info("created an admin API key in %s (readable by this user only); the vigil CLI uses it", created)
    return Authenticator(store, load_secret(directory), ttl_seconds, clock)
