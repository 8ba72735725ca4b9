"""Latency from a Docker action to its line in alerts.json, and the memory of `vigil up`, on a real dockerd.

    .venv/bin/python bench/docker_latency.py [--actions 200]

Starts a private dockerd and `vigil up` (as the e2e tests do), pauses/unpauses a container
through the Engine API N times, and times each alert from the engine's own event time
(timeNano) to the moment its line is readable in alerts.json. Needs root and docker.io.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.daemons import Dockerd, build_busybox_image  # noqa: E402
from tests.e2e.vigil_proc import VigilProcess  # noqa: E402

TARGET_P99_MS = 100.0


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Tail(threading.Thread):
    """Reads alerts.json as it grows and notes when each alert line became readable."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.arrivals: list[tuple[float, dict[str, object]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        offset = 0
        pending = b""
        while not self.stop.is_set():
            if self.path.exists():
                with self.path.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
                if chunk:
                    now = time.time()
                    offset += len(chunk)
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    self.arrivals.extend((now, orjson.loads(line)) for line in lines if line.strip())
            time.sleep(0.0005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actions", type=int, default=200)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root to start dockerd")
    with Dockerd() as dockerd, tempfile.TemporaryDirectory() as tmp:
        build_busybox_image(dockerd)
        vigil = VigilProcess(Path(tmp) / "vigil", dockerd.host, {"analysis": {"fold_window_seconds": 0}})
        vigil.start()
        try:
            assert vigil.proc is not None
            time.sleep(2.0)
            idle_rss = rss_mb(vigil.proc.pid)
            client = dockerd.client()
            container = client.containers.run("vigil-test:1", "sleep 600", detach=True, network_mode="none")
            tail = Tail(vigil.alerts_path)
            tail.start()
            time.sleep(0.5)
            start = len(tail.arrivals)
            for i in range(args.actions):
                (container.pause if i % 2 == 0 else container.unpause)()
                time.sleep(0.01)
            if args.actions % 2:
                container.unpause()
            deadline = time.time() + 10
            wanted = {"87905", "87906"}
            while time.time() < deadline:
                got = [a for _, a in tail.arrivals[start:] if a["rule"]["id"] in wanted]  # type: ignore[index]
                if len(got) >= args.actions:
                    break
                time.sleep(0.05)
            tail.stop.set()
            latencies = [
                (arrived - int(alert["data"]["docker"]["timeNano"]) / 1e9) * 1000  # type: ignore[index]
                for arrived, alert in tail.arrivals[start:]
                if alert["rule"]["id"] in wanted  # type: ignore[index]
            ][: args.actions]
            busy_rss = rss_mb(vigil.proc.pid)
            peak_rss = rss_mb(vigil.proc.pid, "VmHWM")
            container.remove(force=True)
        finally:
            vigil.stop()
    report(args.actions, latencies, idle_rss, busy_rss, peak_rss)


def report(actions: int, latencies: list[float], idle: float, busy: float, peak: float) -> None:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    table = Table(title="Docker action -> alerts.json latency, and vigil up memory",
                  caption="reproduce: .venv/bin/python bench/docker_latency.py --actions " + str(actions))
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_row("actions (pause/unpause via Engine API)", str(actions), "")
    table.add_row("alerts seen", str(len(latencies)), str(actions))
    table.add_row("latency p50", f"{p50:.1f} ms", "")
    verdict = "PASS" if p99 < TARGET_P99_MS else "FAIL"
    table.add_row("latency p99", f"{p99:.1f} ms", f"< {TARGET_P99_MS:.0f} ms {verdict}")
    table.add_row("latency max", f"{ordered[-1]:.1f} ms", "")
    table.add_row("vigil up RSS idle (rules loaded)", f"{idle:.1f} MB", "")
    table.add_row("vigil up RSS after the run", f"{busy:.1f} MB", "")
    table.add_row("vigil up peak RSS (VmHWM)", f"{peak:.1f} MB", "")
    console = Console()
    console.print(table)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    console.print(f"machine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}", highlight=False)


if __name__ == "__main__":
    main()
