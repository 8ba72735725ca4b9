"""`vigil manager`: enrollment, the agent channel, analysis and the API, until SIGTERM."""

from __future__ import annotations

from vigil import __version__, compiled
from vigil.cli.common import console, fail
from vigil.cli.serve import serve_until_signalled, setup_logging, start_api, write_run_file
from vigil.config import VigilConfig
from vigil.errors import VigilError
from vigil.manager.service import Manager


def run_manager(cfg: VigilConfig) -> None:
    setup_logging(cfg)
    try:
        manager = Manager(cfg)
        manager.start()
        server, api_url = start_api(cfg, manager)
    except VigilError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"the manager could not listen on {cfg.manager.listen_host} ({exc}); is another manager "
                   "running, or the ports taken?") from None
    if cfg.api.enabled and server is None:
        manager.stop()
        raise fail(f"the API could not listen on {cfg.api.host}:{cfg.api.port} (is another Vigil running?)")
    ports = manager.ports
    write_run_file(cfg.data_dir / "run.json", {"api": api_url, "enrollment_port": ports["enrollment"],
                                               "channel_port": ports["channel"], "pin": manager.pki.pin})
    m = cfg.manager
    console.print(
        f"Vigil {__version__} manager up: {len(manager.rules.rules)} rules; agents enroll on "
        f"{m.listen_host}:{ports['enrollment']} and send on {m.listen_host}:{ports['channel']}; "
        f"API {api_url or 'off'}; data in {cfg.data_dir}\n"
        f"CA pin: {manager.pki.pin}\nenrollment secret: {cfg.enrollment_secret_path}",
        highlight=False, soft_wrap=True,
    )
    console.print(f"analysis hot path: {compiled.STATUS.detail}", highlight=False, soft_wrap=True)
    serve_until_signalled()
    console.print("Vigil manager stopping...", highlight=False)
    if server is not None:
        server.should_exit = True
    manager.stop()
    (cfg.data_dir / "run.json").unlink(missing_ok=True)
