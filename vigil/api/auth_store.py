"""API users and API keys in SQLite (DATA_DIR/api/auth.db), shared by `vigil up` and `vigil api ...`.

Passwords are kept only as salted scrypt hashes and keys only as SHA-256 digests, so a copy of
this file does not let anyone in. Every request reads the current rows, which is why a removed
user or a revoked key stops working at once, even while `vigil up` runs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Role = Literal["read-only", "admin"]
ROLES: tuple[Role, ...] = ("read-only", "admin")
KEY_PREFIX = "vgl_"
ADMIN_KEY_FILE = "admin.key"
AUTH_DB = "auth.db"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
# scrypt at n=2**14, r=8: about 16 MiB and a few tens of ms per try; slow for guessing, fine for a login.
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2**14, 8, 1, 32
MIN_PASSWORD = 8

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, salt BLOB NOT NULL, hash BLOB NOT NULL,
    n INTEGER NOT NULL, r INTEGER NOT NULL, p INTEGER NOT NULL, token_id TEXT NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, digest TEXT NOT NULL UNIQUE, created REAL NOT NULL
);
"""


class AuthStoreError(ValueError):
    """A user or key operation that cannot be done; the message says why."""


@dataclass(frozen=True)
class Account:
    """A user or a key as listed: never the secret."""

    name: str
    role: Role
    created: float


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    token_id: str  # changes when the user is re-created, so tokens of a removed user never come back


def auth_dir(data_dir: Path) -> Path:
    return data_dir / "api"


def _hash(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=SCRYPT_LEN)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_name(name: str, what: str) -> None:
    if not NAME_RE.match(name):
        raise AuthStoreError(f"{what} name {name[:80]!r} is not valid: use 1-64 letters, digits, '.', '_', '@' "
                             "or '-', starting with a letter or digit")


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise AuthStoreError(f"role {role!r} is not valid: use {' or '.join(ROLES)}")
    return role


class AuthStore:
    """Users and keys; safe to share between the API's threads, and with the CLI in another process."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self._conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(SCHEMA)
        os.chmod(path, 0o600)
        self._lock = threading.Lock()
        # Hashing with a made-up salt for unknown users keeps their answer as slow as a wrong password's.
        self._dummy_salt = secrets.token_bytes(16)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ---- users ---------------------------------------------------------------------------------------
    def add_user(self, name: str, password: str, role: str) -> None:
        check_name(name, "user")
        checked = check_role(role)
        if len(password) < MIN_PASSWORD:
            raise AuthStoreError(f"the password is too short: use at least {MIN_PASSWORD} characters")
        salt = secrets.token_bytes(16)
        digest = _hash(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        row = (name, checked, salt, digest, SCRYPT_N, SCRYPT_R, SCRYPT_P, secrets.token_hex(16), time.time())
        with self._lock, self._conn:
            try:
                self._conn.execute("INSERT INTO users VALUES (?,?,?,?,?,?,?,?,?)", row)
            except sqlite3.IntegrityError:
                raise AuthStoreError(f"a user named {name!r} exists already") from None

    def remove_user(self, name: str) -> bool:
        with self._lock, self._conn:
            return self._conn.execute("DELETE FROM users WHERE name=?", (name,)).rowcount > 0

    def list_users(self) -> list[Account]:
        with self._lock:
            rows = self._conn.execute("SELECT name, role, created FROM users ORDER BY name").fetchall()
        return [Account(name, role, created) for name, role, created in rows]

    def user(self, name: str) -> User | None:
        with self._lock:
            row = self._conn.execute("SELECT role, token_id FROM users WHERE name=?", (name,)).fetchone()
        return User(name, row[0], row[1]) if row else None

    def check_password(self, name: str, password: str) -> User | None:
        """The user when the password is right; the same work is done when the user does not exist."""
        with self._lock:
            row = self._conn.execute(
                "SELECT role, salt, hash, n, r, p, token_id FROM users WHERE name=?", (name,)
            ).fetchone()
        if row is None:
            _hash(password, self._dummy_salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
            return None
        role, salt, stored, n, r, p, token_id = row
        if not hmac.compare_digest(_hash(password, salt, n, r, p), stored):
            return None
        return User(name, role, token_id)

    # ---- keys ----------------------------------------------------------------------------------------
    def add_key(self, name: str, role: str) -> str:
        """Create a key and return it; only its digest is kept, so this is the one time it is seen."""
        check_name(name, "key")
        checked = check_role(role)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._lock, self._conn:
            try:
                self._conn.execute("INSERT INTO keys VALUES (?,?,?,?)", (name, checked, key_digest(key), time.time()))
            except sqlite3.IntegrityError:
                raise AuthStoreError(f"a key named {name!r} exists already") from None
        return key

    def revoke_key(self, name: str) -> bool:
        with self._lock, self._conn:
            return self._conn.execute("DELETE FROM keys WHERE name=?", (name,)).rowcount > 0

    def list_keys(self) -> list[Account]:
        with self._lock:
            rows = self._conn.execute("SELECT name, role, created FROM keys ORDER BY name").fetchall()
        return [Account(name, role, created) for name, role, created in rows]

    def check_key(self, key: str) -> Account | None:
        digest = key_digest(key)
        with self._lock:
            row = self._conn.execute("SELECT name, role, created, digest FROM keys WHERE digest=?",
                                     (digest,)).fetchone()
        if row is None or not hmac.compare_digest(row[3], digest):
            return None
        return Account(row[0], row[1], row[2])

    def has_admin_key(self) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM keys WHERE role='admin' LIMIT 1").fetchone() is not None


def write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only, never briefly world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)
