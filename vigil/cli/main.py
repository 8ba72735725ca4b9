"""The `vigil` command: the only place that prints or exits (DESIGN §6.5)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import typer

from vigil import __version__
from vigil.cli.agent import agent_app
from vigil.cli.agents import agents_app
from vigil.cli.api_admin import api_app, api_get
from vigil.cli.common import CONFIG_OPTION, DATA_DIR_OPTION, console, fail, load
from vigil.cli.k8s import k8s_app
from vigil.errors import VigilError

if TYPE_CHECKING:
    from vigil.manager.analysis.logtest import LogtestResult

# Commands import what they need when they run: `vigil agent run` on a small node should not carry
# the analysis engine, the API server or the HTTP client in its memory (BENCHMARKS.md, agent memory).

app = typer.Typer(help="Vigil: security monitoring for Docker hosts and Kubernetes nodes.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
rules_app = typer.Typer(help="List and validate rules.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
app.add_typer(api_app, name="api")
app.add_typer(agent_app, name="agent")
app.add_typer(agents_app, name="agents")
app.add_typer(k8s_app, name="k8s")


@app.command()
def version() -> None:
    """Print Vigil's version."""
    console.print(__version__)


@app.command()
def up(
    config: Path | None = CONFIG_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    port: int | None = typer.Option(None, help="API port on 127.0.0.1 (default 7555; 0 picks a free one)"),
    docker_host: str | None = typer.Option(None, help="Docker Engine URL (default $DOCKER_HOST or the local socket)"),
) -> None:
    """Run the manager and a local agent in one process (all-in-one)."""
    from vigil.cli.up import run_up

    cfg = load(config, data_dir)
    if port is not None:
        cfg.api.port = port
    if docker_host is not None:
        cfg.docker.host = docker_host
    run_up(cfg)


@app.command()
def manager(
    config: Path | None = CONFIG_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    port: int | None = typer.Option(None, help="API port on 127.0.0.1 (default 7555; 0 picks a free one)"),
) -> None:
    """Run the manager: enroll agents, receive their events, analyse, store, serve the API."""
    from vigil.cli.manager import run_manager

    cfg = load(config, data_dir)
    if port is not None:
        cfg.api.port = port
    run_manager(cfg)


@app.command()
def alerts(
    config: Path | None = CONFIG_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    level: int | None = typer.Option(None, "--level", "-l", min=0, max=16, help="minimum rule level"),
    rule: list[int] = typer.Option([], "--rule", "-r", help="rule id (repeatable)"),
    since: str | None = typer.Option(None, help="epoch, ISO 8601 or an age like 15m, 2h, 1d"),
    until: str | None = typer.Option(None, help="epoch, ISO 8601 or an age"),
    limit: int = typer.Option(50, min=1, max=100_000, help="how many of the newest alerts"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing new alerts"),
    as_json: bool = typer.Option(False, "--json", help="one alert JSON per line"),
) -> None:
    """Show alerts, newest last, as a table or JSON."""
    from vigil.cli.alerts import show_alerts, time_option
    from vigil.manager.outputs.store import AlertQuery

    cfg = load(config, data_dir)
    query = AlertQuery(min_level=level, rule_ids=tuple(rule), since=time_option(since, "since"),
                       until=time_option(until, "until"), limit=limit)
    show_alerts(cfg, query, follow, as_json)


@rules_app.command("list")
def rules_list(
    config: Path | None = CONFIG_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    group: str | None = typer.Option(None, help="only rules in this group"),
    level: int | None = typer.Option(None, min=0, max=16, help="minimum level"),
) -> None:
    """List the loaded rules (shipped and yours)."""
    from rich.table import Table

    from vigil.manager.core import load_ruleset

    cfg = load(config, data_dir)
    try:
        loaded = load_ruleset(cfg)
    except VigilError as exc:
        raise fail(str(exc)) from None
    table = Table(box=None)
    for column in ("id", "level", "groups", "description", "file"):
        table.add_column(column)
    shown = 0
    for rule in sorted(loaded.rules.values(), key=lambda r: r.id):
        if (group and group not in rule.groups) or (level is not None and rule.level < level):
            continue
        shown += 1
        table.add_row(str(rule.id), str(rule.level), ",".join(rule.groups), rule.description, Path(rule.file).name)
    console.print(table)
    console.print(f"{shown} of {len(loaded.rules)} rules", highlight=False)


@rules_app.command("validate")
def rules_validate(
    paths: list[Path] = typer.Argument(None, help="rule directories or files (default: the user rules dir)"),
    config: Path | None = CONFIG_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
) -> None:
    """Check rule files together with the shipped rules (and, by default, your decoders with the shipped
    ones); exit 1 with file:line problems."""
    from vigil.manager.analysis.rule_loader import load_rules, shipped_rules_dir
    from vigil.manager.analysis.text_decoders import load_decoders, shipped_decoders_dir

    cfg = load(config, data_dir)
    dirs = [shipped_rules_dir()]
    if not paths:
        dirs.append(cfg.rules_dir)
    for path in paths or []:
        if path.is_file():
            raise fail(f"{path}: give the directory that holds rule files, not a file")
        if not path.is_dir():
            raise fail(f"{path}: no such directory")
        dirs.append(path)
    try:
        loaded = load_rules(dirs)
        decoders = None if paths else load_decoders([shipped_decoders_dir(), cfg.decoders_dir])
    except VigilError as exc:
        console.print(str(exc), highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    also = f", {len(decoders)} decoders" if decoders is not None else ""
    console.print(f"ok: {len(loaded.rules)} rules in {len(loaded.files)} files{also}", highlight=False)


@app.command()
def logtest(
    source: str = typer.Argument("-", help="a file holding one JSON event or log lines, or - for standard input"),
    config: Path | None = CONFIG_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    as_json: bool = typer.Option(False, "--json", help="print only the alert JSON, one line per input"),
) -> None:
    """Feed an event or log lines and see the decoder, the fields, the rules tried and the alert."""
    from vigil.event import AgentRef
    from vigil.manager.analysis.logtest import events_from_text, run_logtest
    from vigil.manager.core import build_analyzer, load_ruleset

    cfg = load(config, data_dir)
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8", errors="replace")
    try:
        analyzer = build_analyzer(cfg, load_ruleset(cfg))
        events = events_from_text(text, AgentRef(cfg.agent.id, cfg.agent.name, cfg.agent.ip))
        results = [run_logtest(analyzer, event) for event in events]
    except VigilError as exc:
        raise fail(str(exc)) from None
    for number, result in enumerate(results, 1):
        if as_json:
            alert = result.analysed.alert
            console.out(orjson.dumps(alert).decode() if alert else "null", highlight=False)
            continue
        if len(results) > 1:
            console.print(f"[bold]Line {number}:[/] {result.event.raw}", highlight=False, soft_wrap=True)
        _show_logtest(result, cfg.analysis.min_alert_level)


def _show_logtest(result: LogtestResult, min_alert_level: int) -> None:
    from vigil.manager.analysis.logtest import flatten

    analysed = result.analysed
    child = f" (child {analysed.child_decoder})" if analysed.child_decoder else ""
    console.print(f"[bold]Phase 1: decoding[/]\n  decoder: {analysed.decoder}{child}", highlight=False)
    console.print("[bold]Phase 2: fields[/]")
    for path, value in flatten(analysed.fields):
        console.print(f"  {path}: {value!r}", highlight=False, soft_wrap=True)
    console.print("[bold]Phase 3: rules tried[/]")
    for step in result.steps:
        console.print(f"  {'  ' * step.depth}{step.rule_id}: {step.outcome}", highlight=False)
    alert, match = analysed.alert, analysed.match
    if alert is not None:
        console.print(f"[bold]Alert[/] rule {alert['rule']['id']} level {alert['rule']['level']}: "
                      f"{alert['rule']['description']}", highlight=False, soft_wrap=True)
        console.out(orjson.dumps(alert, option=orjson.OPT_INDENT_2).decode(), highlight=False)
    elif match.rule is not None:
        console.print(f"no alert: rule {match.rule.id} matched at level {match.rule.level}, below the alert "
                      f"level {min_alert_level}", highlight=False)
    else:
        console.print("no alert: no rule matched", highlight=False)


@app.command()
def status(
    config: Path | None = CONFIG_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    url: str | None = typer.Option(None, help="API URL (default: read from the data directory)"),
) -> None:
    """Show whether Vigil runs, its modules and counters."""
    import httpx

    cfg = load(config, data_dir)
    run_file = cfg.data_dir / "run.json"
    if url is None and run_file.exists():
        url = orjson.loads(run_file.read_bytes()).get("api")
    url = url or f"http://{cfg.api.host}:{cfg.api.port}"
    try:
        health = api_get(cfg, f"{url}/health")
    except (httpx.HTTPError, ValueError):
        raise fail(f"Vigil is not running (no answer from {url}); start it with `vigil up`", 1) from None
    console.print(
        f"Vigil {health['version']} running for {health['uptime_seconds']} s; {health['rules_loaded']} rules; "
        f"{health['events']} events, {health['alerts']} alerts ({health['alerts_folded']} folded)",
        highlight=False,
    )
    for name, info in health.get("modules", {}).items():
        state = "connected" if info.get("connected") else "NOT connected"
        details = ", ".join(f"{k} {v}" for k, v in info.items() if k != "connected")
        console.print(f"  module {name}: {state}; {details}", highlight=False, soft_wrap=True)
    for key, count in health.get("suppressed", {}).items():
        rule_id, name = key.split(":", 1)
        console.print(f"  suppressed by exception {name!r} on rule {rule_id}: {count} events", highlight=False)


def main() -> None:
    app()
