"""`vigil agent enroll|run|status`: join a manager, then collect and ship events to it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson
import typer

from vigil.cli.common import CONFIG_OPTION, DATA_DIR_OPTION, console, fail, load
from vigil.cli.serve import serve_until_signalled, setup_logging, write_run_file
from vigil.errors import VigilError

agent_app = typer.Typer(help="Run this host's agent: enroll with a manager, then ship events to it.",
                        no_args_is_help=True)

DEFAULT_ENROLLMENT_PORT = 1515


@agent_app.command("enroll")
def enroll_command(
    manager: str = typer.Option(..., help="the manager's address, HOST or HOST:PORT (enrollment port, default 1515)"),
    pin: str = typer.Option(..., help="the manager's CA pin, sha256:... (`vigil agents pin` on the manager)"),
    secret_file: Path | None = typer.Option(None, help="file holding the enrollment secret"),
    token: str | None = typer.Option(None, help="a one-time token from `vigil agents add` (or $VIGIL_ENROLL_TOKEN)"),
    name: str | None = typer.Option(None, help="agent name (default: agent.name in the config, else the host name)"),
    config: Path | None = CONFIG_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
) -> None:
    """Join a manager: check its CA against the pin, then get an identity and a client certificate."""
    from vigil.agent.enroll import enroll
    from vigil.agent.node import IDENTITY_DIR

    cfg = load(config, data_dir)
    host, _, port_text = manager.rpartition(":") if manager.count(":") == 1 else (manager, "", "")
    port = int(port_text) if port_text.isdigit() else DEFAULT_ENROLLMENT_PORT
    token = token or os.environ.get("VIGIL_ENROLL_TOKEN")
    secret = None
    if secret_file is not None:
        try:
            secret = secret_file.read_text().strip()
        except OSError as exc:
            raise fail(f"cannot read the secret file: {exc}") from None
    elif token is None and os.environ.get("VIGIL_ENROLL_SECRET"):
        secret = os.environ["VIGIL_ENROLL_SECRET"]
    try:
        identity = enroll(host, port, pin, name or cfg.agent.name, cfg.data_dir / IDENTITY_DIR, secret=secret,
                          token=token)
    except VigilError as exc:
        raise fail(str(exc)) from None
    how = "re-joined under its old id" if identity.rejoined else "enrolled"
    console.print(f"agent {identity.name} {how} as {identity.agent_id} with the manager at {identity.manager}; "
                  f"identity in {identity.directory}", highlight=False, soft_wrap=True)


@agent_app.command("run")
def run_command(config: Path | None = CONFIG_OPTION, data_dir: Path | None = DATA_DIR_OPTION) -> None:
    """Run the agent: its modules, the durable outbox and the link to the manager, until SIGTERM."""
    from vigil.agent.node import AgentNode

    cfg = load(config, data_dir)
    setup_logging(cfg)
    try:
        node = AgentNode(cfg)
    except VigilError as exc:
        raise fail(str(exc)) from None
    node.start()
    write_run_file(cfg.data_dir / "agent-run.json", {"agent_id": node.agent.id, "name": node.agent.name})
    uplink = node.uplink.settings
    console.print(f"Vigil agent {node.agent.name} ({node.agent.id}) up: modules "
                  f"{', '.join(m.name for m in node.supervisor.modules) or 'none'}; manager {uplink.host}:"
                  f"{uplink.port}; outbox {node.outbox.path} ({node.outbox.depth} events waiting)",
                  highlight=False, soft_wrap=True)
    serve_until_signalled()
    console.print("Vigil agent stopping...", highlight=False)
    node.stop()
    (cfg.data_dir / "agent-run.json").unlink(missing_ok=True)


@agent_app.command("status")
def status_command(config: Path | None = CONFIG_OPTION, data_dir: Path | None = DATA_DIR_OPTION,
                   as_json: bool = typer.Option(False, "--json")) -> None:
    """Show this agent's identity and its outbox (works whether or not the agent runs)."""
    from vigil.agent.node import load_identity
    from vigil.agent.outbox import Outbox

    cfg = load(config, data_dir)
    try:
        identity = load_identity(cfg.data_dir)
    except VigilError as exc:
        raise fail(str(exc)) from None
    outbox = Outbox(cfg.data_dir / "outbox.db", cfg.agent.outbox_max_events)
    running = (cfg.data_dir / "agent-run.json").exists()
    info = {"agent_id": identity.agent_id, "name": identity.name, "manager": identity.manager_host,
            "running": running, "outbox_depth": outbox.depth, "outbox_max_events": outbox.max_events,
            "dropped_total": outbox.dropped_total}
    outbox.close()
    if as_json:
        sys.stdout.write(orjson.dumps(info).decode() + "\n")
        return
    console.print(f"agent {identity.name} ({identity.agent_id}), manager {identity.manager_host}, "
                  f"{'running' if running else 'not running'}; outbox {info['outbox_depth']} of "
                  f"{info['outbox_max_events']} events, {info['dropped_total']} dropped", highlight=False)
