"""`vigil up`: the all-in-one manager + local agent, with the API on 127.0.0.1."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import orjson
import uvicorn

from vigil import __version__
from vigil.api.app import create_app
from vigil.cli.common import console, fail
from vigil.config import VigilConfig
from vigil.errors import VigilError
from vigil.manager.runtime import AllInOne


def run_up(cfg: VigilConfig) -> None:
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    try:
        runtime = AllInOne(cfg)
    except VigilError as exc:
        raise fail(str(exc)) from None
    server = None
    if cfg.api.enabled:
        app = create_app(runtime.health, cfg.db_path, runtime.rules, cfg.api.max_page_size)
        server = uvicorn.Server(uvicorn.Config(app, host=cfg.api.host, port=cfg.api.port, log_level="warning"))
        threading.Thread(target=server.run, name="api", daemon=True).start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            runtime.stop()
            raise fail(f"the API could not listen on {cfg.api.host}:{cfg.api.port} (is another Vigil running?)")
    api_url = _api_url(server, cfg)
    runtime.start()
    _write_run_file(cfg.data_dir / "run.json", api_url)
    console.print(
        f"Vigil {__version__} up: {len(runtime.rules.rules)} rules, alerts to {cfg.alerts_json_path}, "
        f"API {api_url or 'off'}, data in {cfg.data_dir}", highlight=False, soft_wrap=True,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    console.print("Vigil stopping...", highlight=False)
    runtime.stop()
    if server is not None:
        server.should_exit = True
    (cfg.data_dir / "run.json").unlink(missing_ok=True)


def _api_url(server: uvicorn.Server | None, cfg: VigilConfig) -> str | None:
    if server is None:
        return None
    port = cfg.api.port
    for srv in getattr(server, "servers", []):
        for sock in srv.sockets:
            port = sock.getsockname()[1]
    return f"http://{cfg.api.host}:{port}"


def _write_run_file(path: Path, api_url: str | None) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps({"pid": os.getpid(), "api": api_url, "started": time.time()}))
    tmp.replace(path)
