"""`vigil agents ...` on the manager host: tokens and the CA pin locally, the rest through the running manager."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.table import Table

from vigil.cli.api_admin import api_headers
from vigil.cli.common import CONFIG_OPTION, DATA_DIR_OPTION, console, fail, load
from vigil.config import VigilConfig
from vigil.timeparse import parse_duration

agents_app = typer.Typer(help="Manage the agents enrolled with this manager.", no_args_is_help=True)

def _api(cfg: VigilConfig, method: str, path: str, **kwargs: Any) -> Any:
    """Call the running manager's API with the local admin key; errors become clean exits."""
    import httpx  # here: only these commands need it

    run_file = cfg.data_dir / "run.json"
    headers = api_headers(cfg)
    try:
        url = orjson.loads(run_file.read_bytes())["api"]
    except (OSError, ValueError, KeyError):
        url = None
    if not url or not headers:
        raise fail(f"no manager runs on {cfg.data_dir} (no run.json or admin key); start it with `vigil manager`",
                   1) from None
    try:
        response = httpx.request(method, f"{url}{path}", headers=headers, timeout=30, **kwargs)
    except httpx.HTTPError as exc:
        raise fail(f"the manager's API at {url} did not answer: {exc}", 1) from None
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code >= 400:
        raise fail(str(body.get("error") or f"HTTP {response.status_code}"), 1)
    return body


def _when(epoch: float | None) -> str:
    if not epoch:
        return "never"
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@agents_app.command("add")
def add(
    name: str | None = typer.Argument(None, help="bind the token to this agent name (default: any name)"),
    ttl: str = typer.Option("1h", help="how long the token stays valid, e.g. 30m, 2h, 1d"),
    config: Path | None = CONFIG_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
) -> None:
    """Make a one-time enrollment token (shown once; only its hash is kept)."""
    from vigil.manager.registry import AgentRegistry

    cfg = load(config, data_dir)
    try:
        seconds = parse_duration(ttl)
    except ValueError as exc:
        raise fail(f"--ttl: {exc}") from None
    registry = AgentRegistry(cfg.data_dir / "agents.db")
    token = registry.add_token(name, seconds)
    registry.close()
    pin = _pin(cfg)
    console.print(f"token: {token}\nvalid for {ttl}{f' for agent {name}' if name else ''}; on the agent's host run:\n"
                  f"  vigil agent enroll --manager {cfg.manager.server_names[0]} --pin {pin} --token {token}",
                  highlight=False, soft_wrap=True)


def _pin(cfg: VigilConfig) -> str:
    from vigil.certs import ca_pin  # not at the top: `cryptography` weighs 15 MB a running agent need not carry

    try:
        return ca_pin((cfg.data_dir / "pki" / "ca.pem").read_bytes())
    except (OSError, ValueError):
        raise fail(f"no manager CA in {cfg.data_dir / 'pki'}; start `vigil manager` once to create it") from None


@agents_app.command("pin")
def pin(config: Path | None = CONFIG_OPTION, data_dir: Path | None = DATA_DIR_OPTION) -> None:
    """Print the CA pin agents check before they send a secret."""
    console.print(_pin(load(config, data_dir)), highlight=False)


@agents_app.command("list")
def list_agents(config: Path | None = CONFIG_OPTION, data_dir: Path | None = DATA_DIR_OPTION,
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Every enrolled agent: status, version, OS, last seen, events, outbox depth."""
    agents = _api(load(config, data_dir), "GET", "/agents", params={"limit": 1000})["items"]
    if as_json:
        console.out(orjson.dumps(agents).decode(), highlight=False)
        return
    table = Table(box=None)
    for column in ("id", "name", "ip", "status", "version", "last seen", "events", "outbox"):
        table.add_column(column)
    for a in agents:
        table.add_row(a["id"], a["name"], a.get("ip") or "", a["status"], a.get("version") or "",
                      _when(a.get("last_seen")), str(a.get("events_received", 0)),
                      "" if a.get("outbox_depth") is None else str(a["outbox_depth"]))
    console.print(table)
    console.print(f"{len(agents)} agents", highlight=False)


@agents_app.command("show")
def show(agent: str = typer.Argument(..., help="agent id or name"), config: Path | None = CONFIG_OPTION,
         data_dir: Path | None = DATA_DIR_OPTION) -> None:
    """One agent in full."""
    info = _api(load(config, data_dir), "GET", f"/agents/{agent}")
    for key, value in info.items():
        shown = _when(value) if key in ("last_seen", "enrolled_at") else value
        console.print(f"{key}: {shown}", highlight=False, soft_wrap=True)


@agents_app.command("remove")
def remove(agent: str = typer.Argument(..., help="agent id or name"), config: Path | None = CONFIG_OPTION,
           data_dir: Path | None = DATA_DIR_OPTION) -> None:
    """Revoke an agent at once: its connection is cut and its certificate refused."""
    _api(load(config, data_dir), "DELETE", f"/agents/{agent}")
    console.print(f"agent {agent} removed", highlight=False)


def _command(agent: str, op: str, args: dict[str, Any], config: Path | None, data_dir: Path | None) -> Any:
    return _api(load(config, data_dir), "POST", f"/agents/{agent}/commands", json={"op": op, "args": args})


@agents_app.command("ping")
def ping(agent: str = typer.Argument(..., help="agent id or name"), config: Path | None = CONFIG_OPTION,
         data_dir: Path | None = DATA_DIR_OPTION) -> None:
    """A round trip to the agent over its channel."""
    import time

    started = time.monotonic()
    answer = _command(agent, "ping", {}, config, data_dir)
    console.print(f"agent {agent} answered in {(time.monotonic() - started) * 1000:.0f} ms: {answer}",
                  highlight=False)


@agents_app.command("restart-module")
def restart_module(agent: str = typer.Argument(..., help="agent id or name"),
                   module: str = typer.Argument(..., help="module name, e.g. docker"),
                   config: Path | None = CONFIG_OPTION, data_dir: Path | None = DATA_DIR_OPTION) -> None:
    """Restart one module on an agent; the agent logs it and answers."""
    answer = _command(agent, "restart-module", {"module": module}, config, data_dir)
    console.print(f"agent {agent}: {answer}", highlight=False)
