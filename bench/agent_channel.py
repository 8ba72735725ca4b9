"""Agent channel (issue 3): a manager and its agents as separate processes on loopback, measured.

    .venv/bin/python bench/agent_channel.py [--quick] [--parts ingest,memory] [--markdown] [--keep]

Every process is real: the manager is `python -m vigil manager` (mutual TLS 1.3 channel, the shipped
rules, alerts.json + SQLite, the API); each agent is a process of this file (`_agent` mode) that runs
`vigil.agent.node.AgentNode` — the production outbox (SQLite, one transaction per event) and uplink —
with the Docker module off and a load module defined here instead. The load module replays the 406
real Docker Engine events of ../shared/fixtures/docker/session-raw.jsonl through
`normalize.build_event`, as the Docker module would, and stamps each event's `data.bench` with the
agent, a counter and the wall-clock time of its making.

Parts:

1. **ingest, backlog** (the target; part `ingest`): each of 10 agents first fills its outbox with
   2 x 20,000 x duration / 10 events through `Outbox.put` (not timed), then all connect at once and
   the manager drains them; the target is met when the backlog outlasts the duration and the rate
   over it is at least 20,000 events/s (60 s: 1,200,000 of the 2,400,000 in by then), with no loss
   once all are in. Events are stamped with the time they are made, as a live engine stamps them.
   This measures what one manager ingests, analyses and stores when agents send as fast as it takes,
   while the 10 agent processes (uplinks reading SQLite and sending) share this 2-core machine with
   it. The manager's `channel.events_received` (GET /health, counted after a batch is committed) is
   sampled every second; per-10 s rates are differences of that counter. No loss: per agent, events
   put in the outbox == events the manager says it received from that agent (GET /agents), no
   duplicates, no gaps, and alerts in alerts.json == alerts the manager counted.
2. **ingest, live** (opt-in, part `live`): the same 10 agents generate 2,000 events/s each *while*
   the manager ingests, so generation (one SQLite transaction per event in each agent) competes for
   the same 2 cores. What an all-on-one-box run can sustain; it says less about the manager alone.
3. **memory and latency** (part `memory`): one bench agent idle 10 s after connecting, then at
   1,000 events/s for 30 s; VmRSS (and PSS from smaps_rollup) sampled every second. Next to it, a
   real `python -m vigil agent run` (Docker module off, so idle) for the CLI's own footprint.
   Latency: from the stamped time of each event to the moment its alert's line is read from
   alerts.json (followed every 1 ms), folding off.

Durations: --quick is a smoke run (5 s of load; its verdicts mean nothing); the default is the
issue's 60 s / 10 s idle / 30 s at 1,000 events/s. Per-10 s windows show the manager's and agents'
CPU and the rest of the machine's (other users of a shared VM): this host's speed and load swing
within seconds, and a run of real processes cannot interleave the way the engine bench does.
Every process this starts is stopped by its PID at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime
import hashlib
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from vigil.agent.modules.docker import normalize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.tables import markdown_table, measure_table  # noqa: E402

FIXTURE = ROOT.parent / "shared/fixtures/docker/session-raw.jsonl"
PYTHON = sys.executable
MAX_EVENT_BYTES = 1024 * 1024
TARGET_INGEST = 20_000  # events/s, 10 agents, 60 s, no loss
BACKLOG = 2  # the outboxes hold twice the target's events, so a faster manager is still busy for 60 s
TARGET_IDLE_MB = 60.0
TARGET_P99_MS = 500.0
AGENTS = 10


# ==== the agent process (`_agent` mode): AgentNode with a load module =================================


class LoadModule:
    """Makes Docker events at `rate` per second once `go` is set, for `duration` seconds, into the outbox."""

    name = "bench-load"

    def __init__(self, put: Callable[..., Any], agent: Any, objs: list[dict[str, Any]], rate: float,
                 duration: float, go: threading.Event) -> None:
        self.put = put
        self.agent = agent
        self.objs = objs
        self.rate = rate
        self.duration = duration
        self.go = go
        self.generated = 0
        self.refused = 0
        self.started: float | None = None
        self.finished: float | None = None

    def make(self, n: int) -> Any:
        # Stamped now, as the engine stamps a live event: replaying the fixture's own times would make
        # every 406th event go back in time, which no host does and which scatters the store's
        # time index (BENCHMARKS.md, agent channel).
        now_ns = time.time_ns()
        obj = {**self.objs[n % len(self.objs)], "time": now_ns // 1_000_000_000, "timeNano": now_ns}
        return normalize.build_event(obj, self.agent, {"bench": {"agent": self.agent.name, "n": n,
                                                                 "t": now_ns / 1e9}})

    def run(self, stop: threading.Event) -> None:
        while not self.go.wait(0.05):
            if stop.is_set():
                return
        if self.rate <= 0 or self.finished is not None:
            return
        start = self.started = time.monotonic()
        n = 0
        while not stop.is_set():
            elapsed = time.monotonic() - start
            if elapsed >= self.duration:
                break
            due = int(elapsed * self.rate)
            while n < due and not stop.is_set():
                if self.put(self.make(n), None):
                    self.generated += 1
                else:
                    self.refused += 1
                n += 1
            stop.wait(0.002)
        self.finished = time.monotonic()

    def interrupt(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"generated": self.generated, "refused": self.refused}


def agent_main(argv: list[str]) -> int:
    """`_agent CONFIG --prefill N --rate R --duration S`: SIGUSR1 connects, SIGUSR2 starts the load,
    SIGTERM stops; ready.json and result.json in the data dir tell the bench what happened."""
    import logging

    from vigil.agent.node import AgentNode
    from vigil.config import load_config

    parser = argparse.ArgumentParser()
    parser.add_argument("config", type=Path)
    parser.add_argument("--prefill", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--duration", type=float, default=0.0)
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    objs = [orjson.loads(line) for line in FIXTURE.read_bytes().splitlines() if line.strip()]
    connect, load, stop = threading.Event(), threading.Event(), threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: connect.set())
    signal.signal(signal.SIGUSR2, lambda *_: load.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    modules: list[LoadModule] = []

    def extra(outbox: Any, agent: Any) -> list[Any]:
        modules.append(LoadModule(outbox.put, agent, objs, args.rate, args.duration, load))
        return list(modules)

    node = AgentNode(cfg, extra_modules=extra)
    module = modules[0]
    started = time.monotonic()
    kept = sum(bool(node.outbox.put(module.make(-1 - i), None)) for i in range(args.prefill))
    ready = {"pid": os.getpid(), "prefilled": kept, "prefill_seconds": time.monotonic() - started}
    (cfg.data_dir / "ready.json").write_bytes(orjson.dumps(ready))
    while not connect.wait(0.05):
        if stop.is_set():
            break
    if not stop.is_set():
        node.start()
    while not stop.wait(0.2):
        pass
    node.stop()
    result = {**ready, **module.status(), "uplink": node.uplink.status(),
              "load_seconds": (module.finished or time.monotonic()) - module.started if module.started else 0.0}
    (cfg.data_dir / "result.json").write_bytes(orjson.dumps(result))
    return 0


# ==== process plumbing ================================================================================


class Child:
    """One process we started, its output in a log file; stopped by its own PID only."""

    def __init__(self, name: str, args: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=ROOT, start_new_session=True)
        atexit.register(self.stop)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> None:
        atexit.unregister(self.stop)
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(5)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def wait_for(what: str, check: Callable[[], Any], timeout: float, child: Child | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, orjson.JSONDecodeError, OSError):
            value = check()
            if value:
                return value
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.log_tail()}")
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def proc_kb(pid: int, key: str, name: str = "status") -> int:
    for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class Memory:
    rss_mb: float
    pss_mb: float
    hwm_mb: float


def memory(pid: int) -> Memory:
    return Memory(proc_kb(pid, "VmRSS") * 1024 / 1e6, proc_kb(pid, "Pss", "smaps_rollup") * 1024 / 1e6,
                  proc_kb(pid, "VmHWM") * 1024 / 1e6)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """A process and its live children (the manager and its writer process), in seconds."""
    total = cpu_seconds(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                total += cpu_seconds(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return total


class Manager:
    """`python -m vigil manager` on loopback, folding off, with the API for counters."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "manager"
        self.dir.mkdir(parents=True)
        from tests.e2e.cluster import free_ports  # here: the agent processes never need it

        self.enroll_port, self.channel_port, self.api_port = free_ports(3)
        config = {
            "data_dir": str(self.dir), "log_level": "info",
            "manager": {"name": "bench-manager", "listen_host": "127.0.0.1", "channel_port": self.channel_port,
                        "enrollment_port": self.enroll_port, "server_names": ["127.0.0.1", "localhost"]},
            "api": {"host": "127.0.0.1", "port": self.api_port, "rate_per_second": 1000.0, "rate_burst": 1000},
            "analysis": {"fold_window_seconds": 0},
        }
        path = self.dir / "manager.yml"
        path.write_text(yaml.safe_dump(config))
        self.child = Child("manager", [PYTHON, "-m", "vigil", "manager", "--config", str(path)],
                           self.dir / "process.log")
        self.run = wait_for("the manager's run.json", lambda: self._run_info(), 60, self.child)
        self.key = (self.dir / "api" / "admin.key").read_text().strip()
        self.secret = (self.dir / "enrollment.secret").read_text().strip()

    def _run_info(self) -> dict[str, Any] | None:
        info: dict[str, Any] = orjson.loads((self.dir / "run.json").read_bytes())
        return info if info.get("pid") == self.child.pid else None

    @property
    def alerts_path(self) -> Path:
        return self.dir / "alerts.json"

    def api(self, path: str) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}",
                                         headers={"Authorization": f"Bearer {self.key}"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return orjson.loads(answer.read())

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self.api("/health")
        return result

    def agents(self) -> dict[str, dict[str, Any]]:
        items = self.api("/agents?limit=1000")["items"]
        return {a["name"]: a for a in items}


class Agent:
    """An enrolled agent directory; run it as a bench agent (`_agent`) or as the real CLI."""

    def __init__(self, root: Path, manager: Manager, name: str) -> None:
        from vigil.agent.enroll import enroll
        from vigil.agent.node import IDENTITY_DIR

        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True)
        enroll("127.0.0.1", manager.enroll_port, str(manager.run["pin"]), name, self.dir / IDENTITY_DIR,
               secret=manager.secret)
        self.config = self.dir / "agent.yml"
        self.config.write_text(yaml.safe_dump({
            "data_dir": str(self.dir), "log_level": "info", "docker": {"enabled": False}, "logs": {"enabled": False},
            "agent": {"name": name, "manager_host": "127.0.0.1", "manager_port": manager.channel_port},
        }))
        self.child: Child | None = None

    def start_bench(self, prefill: int = 0, rate: float = 0.0, duration: float = 0.0) -> None:
        self.child = Child(self.name, [PYTHON, __file__, "_agent", str(self.config), "--prefill", str(prefill),
                                       "--rate", str(rate), "--duration", str(duration)], self.dir / "process.log")

    def start_cli(self) -> None:
        self.child = Child(self.name, [PYTHON, "-m", "vigil", "agent", "run", "--config", str(self.config)],
                           self.dir / "process.log")

    def ready(self) -> dict[str, Any]:
        assert self.child is not None
        result: dict[str, Any] = wait_for(f"{self.name} ready", lambda: orjson.loads(
            (self.dir / "ready.json").read_bytes()), 600, self.child)
        return result

    def finish(self) -> dict[str, Any]:
        assert self.child is not None
        self.child.stop()
        result: dict[str, Any] = orjson.loads((self.dir / "result.json").read_bytes())
        return result


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="vigil-bench-channel-"))
    try:
        yield root
    finally:
        if not keep:
            subprocess.run(["rm", "-rf", str(root)], check=False)


# ==== part 1 and 2: ingest ============================================================================


@dataclass
class Sample:
    t: float  # seconds since the load began
    received: int
    manager_cpu: float
    agents_cpu: float
    machine_cpu: float


@dataclass
class IngestResult:
    mode: str
    agents: int
    duration: float
    samples: list[Sample]
    sent: dict[str, int]  # per agent: events accepted by its outbox
    received: dict[str, int]  # per agent: events the manager says it received
    health: dict[str, Any]
    alerts_file_lines: int
    manager_rss_mb: float
    drained_at: float | None
    prefill_seconds: float = 0.0
    generated_rate: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def total_sent(self) -> int:
        return sum(self.sent.values())

    @property
    def total_received(self) -> int:
        return int(self.health["channel"].get("events_received", 0))

    def windows(self, size: float = 10.0) -> list[tuple[float, float, int, float, float, float]]:
        """(start, end, events, manager, agents, everything else) CPU shares per window of `size` seconds."""
        out = []
        start = 0.0
        while True:
            end = start + size
            a = self.at(start)
            b = self.at(end)
            if a is None or b is None or b.t - a.t < size * 0.5:
                break
            dt = b.t - a.t
            ours = b.manager_cpu - a.manager_cpu + b.agents_cpu - a.agents_cpu
            out.append((a.t, b.t, b.received - a.received, (b.manager_cpu - a.manager_cpu) / dt,
                        (b.agents_cpu - a.agents_cpu) / dt, (b.machine_cpu - a.machine_cpu - ours) / dt))
            if end >= self.samples[-1].t:
                break
            start = end
        return out

    def at(self, t: float) -> Sample | None:
        """The last sample at or before t (the first one when t is before all)."""
        best = None
        for s in self.samples:
            if s.t <= t + 0.05:
                best = s
        return best

    def rate_over(self, seconds: float) -> float:
        end = self.at(seconds)
        if end is None or end.t <= 0:
            return 0.0
        return end.received / end.t

    @property
    def loss(self) -> int:
        return self.total_sent - self.total_received

    @property
    def per_agent_ok(self) -> bool:
        return all(self.received.get(name) == n for name, n in self.sent.items())


def count_lines(path: Path) -> int:
    n = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            n += chunk.count(b"\n")
    return n


def run_ingest(root: Path, mode: str, duration: float, prefill_total: int, rate: float, log: Callable[[str], None]
               ) -> IngestResult:
    manager = Manager(root / mode)
    log(f"{mode}: manager pid {manager.child.pid} up; enrolling {AGENTS} agents")
    agents = [Agent(root / mode, manager, f"agent-{i:02d}") for i in range(AGENTS)]
    per_agent = prefill_total // AGENTS if mode == "backlog" else 0
    try:
        for a in agents:
            a.start_bench(prefill=per_agent, rate=rate if mode == "live" else 0.0, duration=duration)
        if per_agent:
            log(f"{mode}: filling each outbox with {per_agent:,} events through Outbox.put (not timed) ...")
        readies = [a.ready() for a in agents]
        prefill_seconds = max(r["prefill_seconds"] for r in readies)
        pids = [a.child.pid for a in agents if a.child is not None]
        def start_clock(sig: signal.Signals) -> tuple[int, float, float, float]:
            """Counters and CPU times at the start of the measurement, then the agents are signalled."""
            base = (int(manager.health()["channel"].get("events_received", 0)), tree_cpu_seconds(manager.child.pid),
                    sum(cpu_seconds(p) for p in pids), machine_busy_seconds())
            for a in agents:
                assert a.child is not None
                a.child.signal(sig)
            return base

        base_received, cpu0_m, cpu0_a, cpu0 = start_clock(signal.SIGUSR1)
        if mode == "live":  # connect first, then load: the clock starts with the load
            wait_for("10 agents connected", lambda: manager.health()["agents"]["connected"] == AGENTS, 60)
            base_received, cpu0_m, cpu0_a, cpu0 = start_clock(signal.SIGUSR2)
        t0 = time.monotonic()
        expected = per_agent * AGENTS
        samples = [Sample(0.0, 0, 0.0, 0.0, 0.0)]
        drained_at = None
        stable_since = None
        limit = duration * 6 + 120
        log(f"{mode}: load running; sampling GET /health every second ...")
        while True:
            time.sleep(max(0.0, len(samples) - (time.monotonic() - t0)))
            health = manager.health()
            now = time.monotonic() - t0
            received = int(health["channel"].get("events_received", 0)) - base_received
            samples.append(Sample(now, received, tree_cpu_seconds(manager.child.pid) - cpu0_m,
                                  sum(cpu_seconds(p) for p in pids) - cpu0_a, machine_busy_seconds() - cpu0))
            if len(samples) % 10 == 1:
                log(f"{mode}: t={now:5.1f} s received {received:,} "
                    f"({(received - samples[-11].received) / (now - samples[-11].t):,.0f} events/s last 10 s)")
            if mode == "backlog" and received >= expected:
                drained_at = now
                break
            if mode == "live" and now > duration:
                if samples[-2].received == received:
                    stable_since = stable_since or now
                    if now - stable_since >= 3:
                        drained_at = samples[-1].t
                        break
                else:
                    stable_since = None
            if now > limit:
                log(f"{mode}: gave up waiting after {now:.0f} s")
                break
        health = manager.health()
        by_agent = manager.agents()
        manager_rss = memory(manager.child.pid).rss_mb
        results = {a.name: a.finish() for a in agents}
        sent = {name: int(r["prefilled"]) + int(r["generated"]) for name, r in results.items()}
        received_by_agent = {name: int(by_agent[name]["events_received"]) for name in sent}
        loads = [r["generated"] / r["load_seconds"] for r in results.values() if r.get("load_seconds")]
    finally:
        for a in agents:
            if a.child is not None:
                a.child.stop()
        manager.child.stop()
    lines = count_lines(manager.alerts_path) if manager.alerts_path.exists() else 0
    return IngestResult(mode, AGENTS, duration, samples, sent, received_by_agent, health, lines, manager_rss,
                        drained_at, prefill_seconds, sum(loads))


# ==== part 3: memory and latency ======================================================================


@dataclass
class MemoryLatencyResult:
    idle_bench: Memory
    idle_cli: Memory
    load: list[Memory]
    latencies_ms: list[float]
    generated: int
    received: int
    rate: float
    duration: float
    alerts_other: int


class AlertTail(threading.Thread):
    """Follows alerts.json from its current end; for each stamped alert, now - data.bench.t."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="alert-tail", daemon=True)
        self.path = path
        self.latencies: list[float] = []
        self.other = 0
        self.stop_event = threading.Event()
        self.offset = path.stat().st_size if path.exists() else 0

    def run(self) -> None:
        buffer = b""
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            while not self.stop_event.is_set():
                chunk = handle.read()
                if not chunk:
                    time.sleep(0.001)
                    continue
                now = time.time()
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    stamp = orjson.loads(line).get("data", {}).get("bench")
                    if isinstance(stamp, dict):
                        self.latencies.append((now - float(stamp["t"])) * 1000)
                    else:
                        self.other += 1


def run_memory_latency(root: Path, idle: float, duration: float, rate: float, log: Callable[[str], None]
                       ) -> MemoryLatencyResult:
    manager = Manager(root / "memory")
    bench = Agent(root / "memory", manager, "bench-agent")
    cli = Agent(root / "memory", manager, "cli-agent")
    try:
        bench.start_bench(rate=rate, duration=duration)
        bench.ready()
        assert bench.child is not None
        bench.child.signal(signal.SIGUSR1)
        cli.start_cli()
        assert cli.child is not None
        wait_for("both agents connected", lambda: manager.health()["agents"]["connected"] == 2, 60, cli.child)
        log(f"memory: both agents connected; idle {idle:.0f} s ...")
        time.sleep(idle)
        idle_bench, idle_cli = memory(bench.child.pid), memory(cli.child.pid)
        wait_for("alerts.json", manager.alerts_path.exists, 10)
        tail = AlertTail(manager.alerts_path)
        tail.start()
        base = int(manager.health()["channel"].get("events_received", 0))
        bench.child.signal(signal.SIGUSR2)
        log(f"memory/latency: {rate:,.0f} events/s for {duration:.0f} s ...")
        t0 = time.monotonic()
        load: list[Memory] = []
        while time.monotonic() - t0 < duration:
            time.sleep(1.0)
            load.append(memory(bench.child.pid))
        time.sleep(2.0)
        received = int(manager.health()["channel"].get("events_received", 0)) - base
        tail.stop_event.set()
        tail.join(5)
        result = bench.finish()
        cli.child.stop()
    finally:
        for a in (bench, cli):
            if a.child is not None:
                a.child.stop()
        manager.child.stop()
    return MemoryLatencyResult(idle_bench, idle_cli, load, tail.latencies, int(result["generated"]), received,
                               rate, duration, tail.other)


# ==== report ==========================================================================================


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def source_digest() -> str:
    digest = hashlib.sha256()
    base = ROOT / "vigil"
    for path in sorted(base.rglob("*.py")):
        digest.update(str(path.relative_to(base)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def git_head() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" plus uncommitted work" if dirty else "")


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"nproc {len(os.sched_getaffinity(0))}, {cpu_model()}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}, load average at start {load}")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def ingest_rows(r: IngestResult) -> tuple[list[list[str]], list[list[str]]]:
    windows = [[f"{a:.0f} to {b:.0f}", f"{n:,}", f"{n / (b - a):,.0f}", f"{m * 100:.0f} %", f"{c * 100:.0f} %",
                f"{o * 100:.0f} %"] for a, b, n, m, c, o in r.windows()]
    end = r.drained_at or r.samples[-1].t
    window = min(r.duration, end)
    sustained = r.rate_over(window)
    rates = [n / (b - a) for a, b, n, *_ in r.windows() if b <= end + 0.5]
    health = r.health
    ch = health["channel"]
    summary = [
        ["events sent (accepted by the 10 outboxes)", f"{r.total_sent:,}"],
        ["events the manager received, analysed and stored", f"{r.total_received:,}"],
        ["events analysed (pipeline, all modules incl. the manager's own)", f"{health['events']:,}"],
        ["lost (sent - received)", f"{r.loss:,}"],
        ["per agent: sent == received", "yes" if r.per_agent_ok else "NO"],
        ["duplicates dropped / sequence gaps / malformed",
         f"{ch.get('duplicates_dropped', 0)} / {ch.get('sequence_gaps', 0)} / {ch.get('malformed_events', 0)}"],
        ["alerts counted by the manager / lines in alerts.json", f"{health['alerts']:,} / {r.alerts_file_lines:,}"],
        [f"rate over the first {window:.0f} s", f"{sustained:,.0f} events/s"],
        ["median / slowest / fastest 10 s window" if rates else "10 s windows",
         " / ".join(f"{x:,.0f}" for x in (statistics.median(rates), min(rates), max(rates))) if rates else "n/a"],
        ["all events in after", f"{end:.1f} s" if r.drained_at else f"not all in after {end:.0f} s"],
        ["manager RSS at the end", f"{r.manager_rss_mb:.1f} MB"],
    ]
    if r.mode == "backlog":
        summary.append(["outbox fill before the clock started (slowest agent)", f"{r.prefill_seconds:.1f} s"])
    else:
        summary.append(["generation rate the 10 agents achieved", f"{r.generated_rate:,.0f} events/s"])
    ok = r.loss == 0 and r.per_agent_ok and r.drained_at is not None
    if r.mode == "backlog":
        overall = r.total_received / end if end > 0 else 0.0
        summary.append(["rate over the whole drain", f"{overall:,.0f} events/s"])
        # Sustained: the backlog outlasts the duration, so the manager was busy all of it.
        busy = end >= r.duration
        met = ok and busy and sustained >= TARGET_INGEST
        detail = f"{sustained:,.0f} events/s over the first {window:.0f} s, loss {r.loss}"
        if not busy:
            detail += "; the backlog ran out first: prefill more"
        summary.append([f"target ≥ {TARGET_INGEST:,} events/s sustained for {r.duration:.0f} s, no loss",
                        f"{'PASS' if met else 'FAIL'} ({detail})"])
    return windows, summary


WINDOW_HEADERS = ["seconds", "events", "events/s", "manager CPU (with its writer process)", "10 agents CPU",
                  "rest of the machine CPU (bench, other users)"]


def memory_rows(m: MemoryLatencyResult) -> list[list[str]]:
    rss = [x.rss_mb for x in m.load]
    pss = [x.pss_mb for x in m.load]
    lat = m.latencies_ms
    verdict_mem = "PASS" if m.idle_cli.rss_mb <= TARGET_IDLE_MB and m.idle_bench.rss_mb <= TARGET_IDLE_MB else "FAIL"
    p99 = percentile(lat, 99)
    return [
        ["agent `vigil agent run` (CLI, no modules) idle: RSS / PSS",
         f"{m.idle_cli.rss_mb:.1f} / {m.idle_cli.pss_mb:.1f} MB"],
        ["bench agent (AgentNode + load module) idle: RSS / PSS",
         f"{m.idle_bench.rss_mb:.1f} / {m.idle_bench.pss_mb:.1f} MB"],
        [f"bench agent at {m.rate:,.0f} events/s: RSS median / max",
         f"{statistics.median(rss):.1f} / {max(rss):.1f} MB" if rss else "n/a"],
        [f"bench agent at {m.rate:,.0f} events/s: PSS median / max",
         f"{statistics.median(pss):.1f} / {max(pss):.1f} MB" if pss else "n/a"],
        ["bench agent peak RSS (VmHWM)", f"{m.load[-1].hwm_mb:.1f} MB" if m.load else "n/a"],
        [f"target idle ≤ {TARGET_IDLE_MB:.0f} MB", verdict_mem],
        ["events generated / received by the manager", f"{m.generated:,} / {m.received:,}"],
        ["alerts timed (stamped events that alert)", f"{len(lat):,}"],
        ["latency p50 / p95 / p99 / max",
         " / ".join(f"{percentile(lat, p):.1f}" for p in (50, 95, 99)) + f" / {max(lat, default=float('nan')):.1f} ms"],
        [f"target p99 < {TARGET_P99_MS:.0f} ms", "PASS" if p99 < TARGET_P99_MS else "FAIL"],
    ]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_agent"]:
        return agent_main(argv[1:])
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short durations: a smoke run in under a minute")
    parser.add_argument("--parts", default="ingest,memory",
                        help="comma-separated: ingest (backlog), live, memory (default: ingest,memory)")
    parser.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directories")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts <= {"ingest", "live", "memory"}:
        parser.error("--parts takes ingest, live and memory")
    if not FIXTURE.is_file():
        print(f"fixture not found: {FIXTURE}", file=sys.stderr)
        return 2
    console = Console()
    if args.quick:
        duration, prefill, live_rate, idle, lat_duration = 5.0, TARGET_INGEST * 5 * BACKLOG, 1000.0, 3.0, 5.0
    else:
        duration, prefill, live_rate, idle, lat_duration = 60.0, TARGET_INGEST * 60 * BACKLOG, 2000.0, 10.0, 30.0
    host, code, head = machine(), source_digest(), git_head()
    command = ".venv/bin/python bench/agent_channel.py" + (" --quick" if args.quick else "") + (
        f" --parts {args.parts}" if parts != {"ingest", "memory"} else "")
    info = (f"{host}; {datetime.date.today().isoformat()}; commit {head}; vigil/ source sha256 {code}; "
            "manager and agents as separate processes on 127.0.0.1, mutual TLS 1.3, shipped rules, folding off")
    markdown: list[str] = []
    ok = True
    with workspace(args.keep) as root:
        console.log(f"working in {root}")
        results: list[IngestResult] = []
        if "ingest" in parts:
            results.append(run_ingest(root, "backlog", duration, prefill, 0.0, console.log))
        if "live" in parts:
            results.append(run_ingest(root, "live", duration, 0, live_rate, console.log))
        for r in results:
            windows, summary = ingest_rows(r)
            title = ("Ingest, 10 agents draining pre-filled outboxes" if r.mode == "backlog" else
                     f"Ingest, 10 agents generating {live_rate:,.0f} events/s each while the manager ingests")
            t1 = Table(title=f"{title}: per 10 s")
            for i, h in enumerate(WINDOW_HEADERS):
                t1.add_column(h, justify="left" if i == 0 else "right")
            for row in windows:
                t1.add_row(*row)
            console.print(t1)
            console.print(measure_table(f"{title}: totals", summary))
            markdown += [f"**{title}**", "", markdown_table(WINDOW_HEADERS, windows), "",
                         markdown_table(["measure", "value"], summary), ""]
            ok = ok and r.loss == 0 and r.per_agent_ok
        if "memory" in parts:
            m = run_memory_latency(root, idle, lat_duration, 1000.0, console.log)
            rows = memory_rows(m)
            console.print(measure_table(f"Agent memory and delivery latency at {m.rate:,.0f} events/s", rows))
            markdown += [f"**Agent memory and delivery latency ({m.rate:,.0f} events/s for {m.duration:.0f} s, "
                         f"after {idle:.0f} s idle)**", "", markdown_table(["measure", "value"], rows), ""]
    console.print(f"{command}\n{info}", highlight=False, soft_wrap=True)
    if args.markdown:
        print()
        print("\n".join(markdown))
        print(f"Command: `{command}`\n\nMachine: {info}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
