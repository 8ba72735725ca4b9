"""`vigil api users|keys ...`: manage who may call the API, directly in DATA_DIR/api/auth.db.

Works whether or not Vigil runs: the API reads the same database on every request, so a change
here takes effect at once.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from vigil.api.auth_store import ADMIN_KEY_FILE, AUTH_DB, Account, AuthStore, AuthStoreError, auth_dir
from vigil.cli.common import CONFIG_OPTION, DATA_DIR_OPTION, console, fail, load
from vigil.config import VigilConfig

api_app = typer.Typer(help="Manage API users and API keys.", no_args_is_help=True)
users_app = typer.Typer(help="People who log in with a password (POST /auth/login).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys for machines (sent as a Bearer token or X-API-Key).", no_args_is_help=True)
api_app.add_typer(users_app, name="users")
api_app.add_typer(keys_app, name="keys")

ROLE_OPTION = typer.Option("read-only", "--role", "-r", help="read-only or admin")


def api_headers(cfg: VigilConfig) -> dict[str, str]:
    """Headers for the local CLI's API calls: the admin key `vigil up` wrote on its first start, if readable."""
    try:
        key = (auth_dir(cfg.data_dir) / ADMIN_KEY_FILE).read_text().strip()
    except OSError:
        return {}
    return {"Authorization": f"Bearer {key}"} if key else {}


def api_get(cfg: VigilConfig, url: str) -> Any:
    """GET a JSON answer with the local admin key; a refusal becomes a clean exit that says why.

    Connection failures are left to the caller (httpx.HTTPError): it knows what they mean.
    """
    import httpx  # not at the top: every `vigil` command loads this module, few call the API

    response = httpx.get(url, headers=api_headers(cfg), timeout=5)
    if response.status_code in (401, 403):
        try:
            reason = response.json().get("error", response.text)
        except ValueError:
            reason = response.text
        raise fail(f"the API at {url} refused the request: {reason} (the CLI sends the key in "
                   f"{auth_dir(cfg.data_dir) / ADMIN_KEY_FILE}; is --data-dir the one Vigil uses?)", 1)
    return response.json()


def _store(config: Path | None, data_dir: Path | None) -> AuthStore:
    cfg = load(config, data_dir)
    try:
        return AuthStore(auth_dir(cfg.data_dir) / AUTH_DB)
    except OSError as exc:
        raise fail(f"cannot open the API auth database under {auth_dir(cfg.data_dir)}: {exc}") from None


def _table(accounts: list[Account], what: str) -> None:
    table = Table(box=None)
    for column in ("name", "role", "created (UTC)"):
        table.add_column(column)
    for account in accounts:
        table.add_row(account.name, account.role, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(account.created)))
    console.print(table)
    console.print(f"{len(accounts)} {what}", highlight=False)


@users_app.command("add")
def users_add(
    name: str = typer.Argument(..., help="the user name to log in with"),
    role: str = ROLE_OPTION,
    password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from standard input"),
    config: Path | None = CONFIG_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
) -> None:
    """Add a user; the password is asked twice (or read from standard input)."""
    store = _store(config, data_dir)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        store.add_user(name, password, role)
    except AuthStoreError as exc:
        raise fail(str(exc)) from None
    console.print(f"user {name} added with the role {role}", highlight=False)


@users_app.command("list")
def users_list(config: Path | None = CONFIG_OPTION, data_dir: Path | None = DATA_DIR_OPTION) -> None:
    """List the users and their roles."""
    _table(_store(config, data_dir).list_users(), "users")


@users_app.command("remove")
def users_remove(
    name: str = typer.Argument(..., help="the user to remove; their tokens stop working at once"),
    config: Path | None = CONFIG_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
) -> None:
    """Remove a user."""
    if not _store(config, data_dir).remove_user(name):
        raise fail(f"no user named {name!r}", 1)
    console.print(f"user {name} removed", highlight=False)


@keys_app.command("add")
def keys_add(
    name: str = typer.Argument(..., help="a name for the key, e.g. the machine that uses it"),
    role: str = ROLE_OPTION,
    config: Path | None = CONFIG_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
) -> None:
    """Make an API key and print it; it is shown this once (only its SHA-256 is kept)."""
    try:
        key = _store(config, data_dir).add_key(name, role)
    except AuthStoreError as exc:
        raise fail(str(exc)) from None
    console.print(f"key {name} ({role}); keep it now, it is not shown again:", highlight=False)
    console.out(key, highlight=False)


@keys_app.command("list")
def keys_list(config: Path | None = CONFIG_OPTION, data_dir: Path | None = DATA_DIR_OPTION) -> None:
    """List the keys (names and roles, never the keys)."""
    _table(_store(config, data_dir).list_keys(), "keys")


@keys_app.command("revoke")
def keys_revoke(
    name: str = typer.Argument(..., help="the key to revoke; it stops working at once"),
    config: Path | None = CONFIG_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
) -> None:
    """Revoke a key."""
    if not _store(config, data_dir).revoke_key(name):
        raise fail(f"no key named {name!r}", 1)
    console.print(f"key {name} revoked", highlight=False)
