"""`vigil up`: the all-in-one manager + local agent, with the API on 127.0.0.1."""

from __future__ import annotations

from vigil import __version__, compiled
from vigil.cli.common import console, fail
from vigil.cli.serve import serve_until_signalled, setup_logging, start_api, write_run_file
from vigil.config import VigilConfig
from vigil.errors import VigilError
from vigil.manager.runtime import AllInOne


def run_up(cfg: VigilConfig) -> None:
    setup_logging(cfg)
    try:
        runtime = AllInOne(cfg)
        server, api_url = start_api(cfg, runtime)
    except VigilError as exc:
        raise fail(str(exc)) from None
    if cfg.api.enabled and server is None:
        runtime.stop()
        raise fail(f"the API could not listen on {cfg.api.host}:{cfg.api.port} (is another Vigil running?)")
    runtime.start()
    write_run_file(cfg.data_dir / "run.json", {"api": api_url})
    console.print(
        f"Vigil {__version__} up: {len(runtime.rules.rules)} rules, alerts to {cfg.alerts_json_path}, "
        f"API {api_url or 'off'}, data in {cfg.data_dir}", highlight=False, soft_wrap=True,
    )
    console.print(f"analysis hot path: {compiled.STATUS.detail}", highlight=False, soft_wrap=True)
    serve_until_signalled()
    console.print("Vigil stopping...", highlight=False)
    runtime.stop()
    if server is not None:
        server.should_exit = True
    (cfg.data_dir / "run.json").unlink(missing_ok=True)
