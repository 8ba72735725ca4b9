"""API authentication and roles, as a caller sees them: status codes, messages, and what stops working when."""

from __future__ import annotations

import stat
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient

from vigil.api.app import create_app
from vigil.api.auth import ADMIN_KEY_FILE, AUTH_DB, SECRET_FILE
from vigil.api.auth_store import AuthStore, AuthStoreError
from vigil.config import ApiConfig

from .api_support import Clock, client, make_app

PASSWORD = "correct horse battery"
PROTECTED = [
    ("GET", "/health"), ("GET", "/metrics"), ("GET", "/agents"), ("GET", "/agents/001"), ("GET", "/alerts"),
    ("GET", "/alerts/1.2"), ("GET", "/rules"), ("GET", "/rules/87901"), ("DELETE", "/agents/001"),
    ("POST", "/agents/001/commands"),
]


def users(tmp_path: Path) -> AuthStore:
    """The auth database opened separately, as `vigil api ...` does from another process."""
    return AuthStore(tmp_path / "api" / AUTH_DB)


def login(app_client: TestClient, name: str, password: str = PASSWORD) -> str:
    response = app_client.post("/auth/login", json={"username": name, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_no_credentials_is_401_with_a_bearer_challenge(tmp_path: Path, method: str, path: str) -> None:
    app, _, _ = make_app(tmp_path)
    response = client(app).request(method, path, json={"op": "ping"} if method == "POST" else None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "authentication required" in response.json()["error"]


def test_open_endpoints_need_no_credentials(tmp_path: Path) -> None:
    app, _, _ = make_app(tmp_path)
    anonymous = client(app)
    assert anonymous.get("/openapi.json").status_code == 200
    assert anonymous.get("/docs").status_code == 200
    assert anonymous.post("/auth/login", json={"username": "x", "password": "y"}).status_code == 401


def test_admin_key_as_bearer_or_x_api_key(tmp_path: Path) -> None:
    app, _, key = make_app(tmp_path)
    assert client(app, key).get("/health").json()["status"] == "ok"
    assert client(app).get("/health", headers={"X-API-Key": key}).status_code == 200
    assert client(app).get("/health", headers={"Authorization": f"Basic {key}"}).status_code == 401


@pytest.mark.parametrize("credential", ["nonsense", "vgl_" + "A" * 43, "a.b.c", ""])
def test_bad_credentials_are_401(tmp_path: Path, credential: str) -> None:
    app, _, _ = make_app(tmp_path)
    response = client(app).get("/alerts", headers={"Authorization": f"Bearer {credential}"})
    assert response.status_code == 401
    assert response.json()["error"]


def test_read_only_user_reads_but_cannot_remove_or_command(tmp_path: Path) -> None:
    app, backend, _ = make_app(tmp_path)
    users(tmp_path).add_user("alice", PASSWORD, "read-only")
    token = login(client(app), "alice")
    alice = client(app, token)
    for path in ("/health", "/agents", "/alerts", "/rules", "/metrics", "/agents/web-1"):
        assert alice.get(path).status_code == 200, path
    refused = alice.delete("/agents/001")
    assert refused.status_code == 403
    assert "read-only" in refused.json()["error"] and "admin" in refused.json()["error"]
    assert alice.post("/agents/001/commands", json={"op": "ping"}).status_code == 403
    assert backend.removed == [] and backend.commands == []


def test_read_only_key_cannot_remove(tmp_path: Path) -> None:
    app, backend, _ = make_app(tmp_path)
    key = users(tmp_path).add_key("grafana", "read-only")
    assert client(app, key).get("/alerts").status_code == 200
    assert client(app, key).delete("/agents/001").status_code == 403
    assert backend.removed == []


def test_admin_user_may_remove(tmp_path: Path) -> None:
    app, backend, _ = make_app(tmp_path)
    users(tmp_path).add_user("root", PASSWORD, "admin")
    response = client(app, login(client(app), "root")).delete("/agents/web-1")
    assert response.status_code == 200
    assert response.json() == {"removed": "001"}
    assert backend.removed == ["001"]


def test_token_claims_and_lifetime(tmp_path: Path) -> None:
    clock = Clock()
    app, _, _ = make_app(tmp_path, clock=clock, token_ttl_seconds=60)
    users(tmp_path).add_user("alice", PASSWORD, "read-only")
    answer = client(app).post("/auth/login", json={"username": "alice", "password": PASSWORD}).json()
    assert (answer["token_type"], answer["expires_in"], answer["role"]) == ("bearer", 60, "read-only")
    claims = jwt.decode(answer["token"], options={"verify_signature": False})
    assert (claims["sub"], claims["role"], claims["iat"], claims["exp"]) == ("alice", "read-only", int(clock.now),
                                                                              int(clock.now) + 60)
    assert jwt.get_unverified_header(answer["token"])["alg"] == "HS256"


def test_expired_token_is_refused_and_says_so(tmp_path: Path) -> None:
    clock = Clock()
    app, _, _ = make_app(tmp_path, clock=clock, token_ttl_seconds=60)
    users(tmp_path).add_user("alice", PASSWORD, "admin")
    alice = client(app, login(client(app), "alice"))
    clock.now += 59
    assert alice.get("/alerts").status_code == 200
    clock.now += 1
    response = alice.get("/alerts")
    assert response.status_code == 401
    assert "expired" in response.json()["error"]
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_token_signed_with_another_secret_or_none_is_refused(tmp_path: Path) -> None:
    clock = Clock()
    app, _, _ = make_app(tmp_path, clock=clock)
    users(tmp_path).add_user("alice", PASSWORD, "admin")
    claims = jwt.decode(login(client(app), "alice"), options={"verify_signature": False})
    forged = jwt.encode(claims, "x" * 32, algorithm="HS256")
    unsigned = jwt.encode(claims, None, algorithm="none")
    for token in (forged, unsigned):
        response = client(app, token).get("/alerts")
        assert response.status_code == 401
        assert "not valid" in response.json()["error"]


def test_revoked_key_stops_at_once(tmp_path: Path) -> None:
    app, _, _ = make_app(tmp_path)
    key = users(tmp_path).add_key("ci", "admin")
    assert client(app, key).get("/alerts").status_code == 200
    assert users(tmp_path).revoke_key("ci")
    response = client(app, key).get("/alerts")
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]


def test_removed_user_token_stops_at_once_even_if_the_name_returns(tmp_path: Path) -> None:
    app, _, _ = make_app(tmp_path)
    users(tmp_path).add_user("bob", PASSWORD, "admin")
    bob = client(app, login(client(app), "bob"))
    assert bob.get("/agents").status_code == 200
    assert users(tmp_path).remove_user("bob")
    assert bob.get("/agents").status_code == 401
    users(tmp_path).add_user("bob", PASSWORD, "admin")
    response = bob.get("/agents")
    assert response.status_code == 401
    assert "no longer exists" in response.json()["error"]


def test_wrong_password_and_unknown_user_get_the_same_401(tmp_path: Path) -> None:
    app, _, _ = make_app(tmp_path)
    users(tmp_path).add_user("alice", PASSWORD, "admin")
    wrong = client(app).post("/auth/login", json={"username": "alice", "password": "wrong password"})
    unknown = client(app).post("/auth/login", json={"username": "mallory", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"error": "wrong user name or password"}


def test_failed_logins_are_limited_per_user_and_address(tmp_path: Path) -> None:
    app, _, _ = make_app(tmp_path, login_attempts_per_minute=3)
    users(tmp_path).add_user("alice", PASSWORD, "admin")
    users(tmp_path).add_user("carol", PASSWORD, "admin")
    anonymous = client(app)
    for _ in range(3):
        assert anonymous.post("/auth/login", json={"username": "alice", "password": "guess-guess"}).status_code == 401
    limited = anonymous.post("/auth/login", json={"username": "alice", "password": PASSWORD})
    assert limited.status_code == 429, "the right password does not help once limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert "too many failed logins" in limited.json()["error"]
    assert anonymous.post("/auth/login", json={"username": "carol", "password": PASSWORD}).status_code == 200


def test_admin_key_file_secret_and_database_are_private(tmp_path: Path) -> None:
    app, _, key = make_app(tmp_path)
    for name in (ADMIN_KEY_FILE, SECRET_FILE, AUTH_DB):
        assert stat.S_IMODE((tmp_path / "api" / name).stat().st_mode) == 0o600, name
    users(tmp_path).add_user("alice", PASSWORD, "admin")
    stored = (tmp_path / "api" / AUTH_DB).read_bytes() + b"".join(
        p.read_bytes() for p in (tmp_path / "api").glob("auth.db-*"))
    assert key.encode() not in stored and PASSWORD.encode() not in stored
    # A second start keeps the same key: it is made only when no admin key exists.
    create_app(app.state.ctx.backend, ApiConfig(), tmp_path)
    assert (tmp_path / "api" / ADMIN_KEY_FILE).read_text().strip() == key
    assert [k.name for k in users(tmp_path).list_keys()] == ["local-admin"]


def test_user_and_key_rules(tmp_path: Path) -> None:
    store = users(tmp_path)
    with pytest.raises(AuthStoreError, match="too short"):
        store.add_user("alice", "short", "admin")
    with pytest.raises(AuthStoreError, match="role"):
        store.add_user("alice", PASSWORD, "root")
    with pytest.raises(AuthStoreError, match="not valid"):
        store.add_key("bad name!", "admin")
    store.add_key("k", "admin")
    with pytest.raises(AuthStoreError, match="exists already"):
        store.add_key("k", "read-only")

