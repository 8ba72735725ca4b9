"""`vigil api users|keys` and `vigil status` with the admin key, as a user runs them."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx

from tests.unit.api_support import bearer, client, live_server, make_app
from vigil.api.app import create_app
from vigil.config import VigilConfig
from vigil.manager.runtime import AllInOne

from .test_cli import vigil


def test_users_add_list_remove(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    added = vigil("api", "users", "add", "alice", "--role", "admin", "--password-stdin", *data,
                  stdin="a long password\n")
    assert added.returncode == 0, added.stderr
    assert "user alice added with the role admin" in added.stdout
    prompted = vigil("api", "users", "add", "bob", *data, stdin="another password\nanother password\n")
    assert prompted.returncode == 0, prompted.stderr
    listed = vigil("api", "users", "list", *data)
    assert "alice" in listed.stdout and "bob" in listed.stdout and "read-only" in listed.stdout
    assert stat.S_IMODE((tmp_path / "api" / "auth.db").stat().st_mode) == 0o600
    app, _, _ = make_app(tmp_path)
    login = client(app).post("/auth/login", json={"username": "alice", "password": "a long password"})
    assert login.status_code == 200 and login.json()["role"] == "admin"
    assert vigil("api", "users", "remove", "alice", *data).returncode == 0
    assert client(app).post("/auth/login", json={"username": "alice", "password": "a long password"}).status_code == 401
    missing = vigil("api", "users", "remove", "alice", *data)
    assert missing.returncode == 1 and "no user named 'alice'" in missing.stderr


def test_bad_user_input_is_a_clean_error(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    short = vigil("api", "users", "add", "carol", "--password-stdin", *data, stdin="short\n")
    assert short.returncode == 2 and "too short" in short.stderr and "Traceback" not in short.stderr
    role = vigil("api", "keys", "add", "k", "--role", "root", *data)
    assert role.returncode == 2 and "read-only or admin" in role.stderr


def test_keys_add_list_revoke(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    added = vigil("api", "keys", "add", "grafana", "--role", "read-only", *data)
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip().splitlines()[-1]
    assert key.startswith("vgl_")
    app, _, _ = make_app(tmp_path)
    assert client(app, key).get("/alerts").status_code == 200
    assert client(app, key).delete("/agents/001").status_code == 403
    listed = vigil("api", "keys", "list", *data).stdout
    assert "grafana" in listed and "local-admin" in listed and key not in listed
    assert vigil("api", "keys", "revoke", "grafana", *data).returncode == 0
    assert client(app, key).get("/alerts").status_code == 401


def test_status_sends_the_admin_key(tmp_path: Path) -> None:
    cfg = VigilConfig.model_validate({"data_dir": str(tmp_path), "docker": {"enabled": False},
                                   "logs": {"enabled": False}})
    runtime = AllInOne(cfg)
    try:
        app = create_app(runtime, cfg.api, tmp_path)
        with live_server(app) as url:
            assert httpx.get(f"{url}/health", timeout=5).status_code == 401
            shown = vigil("status", "--data-dir", str(tmp_path), "--url", url)
            assert shown.returncode == 0, shown.stderr
            assert "running for" in shown.stdout
            key = (tmp_path / "api" / "admin.key").read_text().strip()
            assert httpx.get(f"{url}/health", headers=bearer(key), timeout=5).status_code == 200
            (tmp_path / "api" / "admin.key").unlink()
            refused = vigil("status", "--data-dir", str(tmp_path), "--url", url)
            assert refused.returncode == 1
            assert "refused" in refused.stderr and "admin.key" in refused.stderr
    finally:
        runtime.stop()
