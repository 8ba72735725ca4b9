"""Process plumbing `vigil up`, `vigil manager` and `vigil agent run` share: logging, the API server, signals."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from vigil.config import VigilConfig
from vigil.errors import VigilError

if TYPE_CHECKING:
    import uvicorn

    from vigil.api.backend import Backend


def setup_logging(cfg: VigilConfig) -> None:
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def start_api(cfg: VigilConfig, backend: Backend) -> tuple[uvicorn.Server | None, str | None]:
    """Serve the API in a thread; (None, None) when it is off, (None, url) when it could not listen."""
    if not cfg.api.enabled:
        return None, None
    import uvicorn  # here, not at the top: `vigil agent run` shares this module and serves no API

    from vigil.api.app import create_app

    try:
        app = create_app(backend, cfg.api, cfg.data_dir)
    except (OSError, sqlite3.Error) as exc:
        raise VigilError(f"cannot open the API's users and keys under {cfg.data_dir / 'api'}: {exc}") from None
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.api.host, port=cfg.api.port, log_level="warning"))
    threading.Thread(target=server.run, name="api", daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        return None, f"http://{cfg.api.host}:{cfg.api.port}"
    port = cfg.api.port
    for srv in getattr(server, "servers", []):
        for sock in srv.sockets:
            port = sock.getsockname()[1]
    return server, f"http://{cfg.api.host}:{port}"


def write_run_file(path: Path, info: dict[str, Any]) -> None:
    """Tells the CLI (and tests) that this process is up, and where: written once everything listens."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps({"pid": os.getpid(), "started": time.time(), **info}))
    tmp.replace(path)


def serve_until_signalled() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
