"""The agent's log collector: lines per second from files into the durable outbox, and its memory.

    .venv/bin/python bench/log_collection.py [--lines N] [--files F] [--markdown]

Writes N lines (sshd, cron, nginx and kernel lines, ~95 bytes each) spread over F files in a
temp dir, then runs the `logs` module as `vigil agent` does (one thread, a real SQLite outbox,
each poll's lines and offsets in one transaction) until every line is in the outbox. A second
run reads one file rotated by rename every N/10 lines while it is written, to show what rotation
costs (each renamed file is read until quiet for 1 s). Baseline in the same run:
`tail -q -n +1 FILES > /dev/null` (GNU coreutils), which only reads.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.tables import markdown_table  # noqa: E402
from vigil.agent.modules.logs.collector import LogsModule  # noqa: E402
from vigil.agent.outbox import Outbox  # noqa: E402
from vigil.config import LogsConfig  # noqa: E402
from vigil.event import AgentRef  # noqa: E402

LINES = [
    "Nov 27 08:00:{s:02d} web-1 sshd[{n}]: Failed password for invalid user admin from 203.0.113.{h} port 50{h} ssh2",
    "Nov 27 08:00:{s:02d} web-1 CRON[{n}]: (root) CMD (run-parts /etc/cron.hourly)",
    '203.0.113.{h} - - [27/Nov/2026:08:00:{s:02d} +0000] "GET /shop/item/{n} HTTP/1.1" 200 5120 "-" "Mozilla/5.0"',
    "Nov 27 08:00:{s:02d} web-1 kernel: [{n}.123456] eth0: link up, 1000 Mbps, full duplex",
]


def line(i: int) -> bytes:
    return (LINES[i % len(LINES)].format(s=i % 60, n=i, h=i % 250) + "\n").encode()


def run_module(files: list[str], data: Path, expected: int, rotate: Path | None = None) -> tuple[float, float]:
    """Seconds until `expected` lines are in the outbox, and the peak RSS growth in MB."""
    outbox = Outbox(data / "outbox.db", expected + 1000)
    config = LogsConfig(files=files, docker_containers=False, cri_logs=False, journal="off", poll_seconds=0.05,
                        start_at="beginning")
    module = LogsModule(config, AgentRef("001", "bench"), outbox.put_many, outbox.state)
    stop = threading.Event()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    thread = threading.Thread(target=module.run, args=(stop,))
    thread.start()
    if rotate is not None:
        write_rotating(rotate, expected, outbox)
    deadline = time.monotonic() + 600
    while outbox.depth < expected:
        if time.monotonic() > deadline or not thread.is_alive():
            raise SystemExit(f"stuck at {outbox.depth} of {expected} lines: {module.status()}")
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    stop.set()
    thread.join()
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert outbox.depth == expected, (outbox.depth, expected)
    outbox.close()
    return elapsed, grown


def write_rotating(path: Path, count: int, outbox: Outbox) -> None:
    """An application writing `count` lines, its file renamed every tenth (logrotate, then a reopen) while
    the collector is halfway through it. (A file created and renamed away before any poll saw it is
    not found: that is the collector's documented limit, and no logrotate runs that fast.)"""
    step = count // 10
    for part in range(10):
        with path.open("ab") as f:
            f.write(b"".join(line(i) for i in range(part * step, (part + 1) * step)))
        if part < 9:
            while outbox.depth < part * step + step // 2:
                time.sleep(0.001)
            os.rename(path, f"{path}.{part + 1}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = [folder / f"app{k}.log" for k in range(args.files)]
        per_file = args.lines // args.files
        for k, path in enumerate(files):
            path.write_bytes(b"".join(line(k * per_file + i) for i in range(per_file)))
        total = per_file * args.files
        size_mb = sum(p.stat().st_size for p in files) / 1e6
        started = time.perf_counter()
        subprocess.run(["tail", "-q", "-n", "+1", *map(str, files)], stdout=subprocess.DEVNULL, check=True)
        tail_seconds = time.perf_counter() - started
        rows.append([f"`tail -n +1` over {args.files} files (read only)", f"{total:,}", f"{tail_seconds:.2f}",
                     f"{total / tail_seconds:,.0f}", "n/a"])
        (folder / "run1").mkdir()
        seconds, grown = run_module([str(p) for p in files], folder / "run1", total)
        rows.append([f"Vigil logs module, {args.files} files → outbox", f"{total:,}", f"{seconds:.2f}",
                     f"{total / seconds:,.0f}", f"{grown:.1f}"])
        (folder / "run2").mkdir()
        rotating = folder / "run2" / "rotating.log"
        count = (args.lines // 10) * 10
        seconds, grown = run_module([str(rotating)], folder / "run2", count, rotate=rotating)
        rows.append(["Vigil logs module, 1 file renamed 9 times while written → outbox (each old file is read "
                     "until quiet for 1 s)", f"{count:,}",
                     f"{seconds:.2f}", f"{count / seconds:,.0f}", f"{grown:.1f}"])
    headers = ["run", "lines", "seconds", "lines/s", "RSS growth MB"]
    command = f".venv/bin/python bench/log_collection.py --lines {args.lines} --files {args.files}"
    print(f"{size_mb:.0f} MB of log lines; command: {command}")
    if args.markdown:
        print(markdown_table(headers, rows))
    else:
        for row in [headers, *rows]:
            print(" | ".join(row))


if __name__ == "__main__":
    main()
