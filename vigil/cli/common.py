"""Shared CLI plumbing: loading config with overrides, and turning Vigil errors into clean exits."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from vigil.config import VigilConfig, load_config
from vigil.errors import VigilError

# Piped output is not wrapped at 80 columns, so `vigil alerts | grep` sees whole lines.
console = Console(width=None if sys.stdout.isatty() else 400)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 400)

CONFIG_OPTION = typer.Option(
    None, "--config", "-c", help="YAML config file (default: $VIGIL_CONFIG, else built-in defaults)"
)
DATA_DIR_OPTION = typer.Option(
    None, "--data-dir", "-d", help="data directory (default: ./vigil-data or $VIGIL_DATA_DIR)"
)


def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def load(config: Path | None, data_dir: Path | None) -> VigilConfig:
    path = config or (Path(os.environ["VIGIL_CONFIG"]) if os.environ.get("VIGIL_CONFIG") else None)
    try:
        cfg = load_config(path)
    except VigilError as exc:
        raise fail(str(exc)) from None
    if data_dir is not None:
        cfg.data_dir = data_dir
    return cfg
