"""Log analysis throughput (issue 4): a mixed text log through decoders, all rules and serialisation.

    .venv/bin/python bench/log_throughput.py [--lines 1000000] [--markdown]

Writes a deterministic mixed log (syslog, sshd, sudo, nginx access, dpkg; the shares are in MIX, about
5 % of lines alert at level >= 3), then on one core:

1. **Vigil**: each line becomes an Event (decoder `syslog`, as the log collector will make it) and goes
   through `Analyzer.analyse` (syslog header, text decoders, all shipped rules) and `encode_alert` for
   each alert: the production path, with the manager's garbage-collector setting. Timed in chunks of
   100,000 lines; the median chunk is what the target is judged on, as in the engine bench. The hot
   path is compiled when scripts/bootstrap.sh built it (vigil/compiled.py); the same measurement
   then runs again in a process with VIGIL_PURE_PYTHON=1, for what compiling gains.
2. **Baseline, same run**: `fail2ban-regex` (Debian's fail2ban) with its stock sshd filter over the
   same file, as a subprocess, timed by wall clock. fail2ban looks for one thing (sshd failures);
   Vigil decodes and judges every line with all its rules.
3. **Memory**: resident memory of a fresh process after loading the shipped rules, and after loading
   2,000 generated rules more (each with a regex and an `exists` condition, as users write them):
   the difference per 1,000 rules. Rules compile their regexes and generate their matcher when
   first used, so the same is also measured as if every rule had run once (no target on that).

Targets: >= 50,000 lines/s on one core (stretch 100,000); >= 2x fail2ban-regex; <= 4 MB per 1,000 rules.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.tables import markdown_table, measure_table  # noqa: E402
from vigil import compiled  # noqa: E402
from vigil.alert import MitreCatalog, encode_alert  # noqa: E402
from vigil.compiled import PURE_PYTHON_ENV  # noqa: E402
from vigil.event import AgentRef, Event  # noqa: E402
from vigil.gcpolicy import settle_for_throughput  # noqa: E402
from vigil.manager.analysis.analyzer import Analyzer  # noqa: E402
from vigil.manager.analysis.decoders import TEXT  # noqa: E402
from vigil.manager.analysis.engine import Engine  # noqa: E402
from vigil.manager.analysis.rule_loader import load_rules, shipped_rules_dir  # noqa: E402
from vigil.manager.analysis.ruleset import RuleSet  # noqa: E402
from vigil.manager.analysis.text_decoders import load_decoders, shipped_decoders_dir  # noqa: E402

TARGET_LINES_PER_SECOND = 50_000
STRETCH_LINES_PER_SECOND = 100_000
TARGET_RATIO = 2.0
TARGET_MB_PER_1000_RULES = 4.0
CHUNK = 100_000
MIN_ALERT_LEVEL = 3
FAIL2BAN_FILTER = Path("/etc/fail2ban/filter.d/sshd.conf")


def _ip(rng: random.Random) -> str:
    return f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _stamp(i: int) -> str:
    return f"Mar {1 + (i // 86400) % 28:2d} {(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}"


def _syslog(rng: random.Random, i: int) -> str:
    program, message = rng.choice([
        ("CRON[2211]", "(root) CMD (   cd / && run-parts --report /etc/cron.hourly)"),
        ("systemd[1]", "Started Session 42 of User deploy."),
        ("systemd[1]", "Starting Daily apt download activities..."),
        ("kernel", "[12345.678901] eth0: renamed from veth3f2a1b"),
        ("dockerd[812]", 'time="2026-03-01T10:00:00.000000000Z" level=info msg="ignoring event"'),
        ("containerd[640]", 'time="2026-03-01T10:00:00Z" level=info msg="shim disconnected" id=abc'),
        ("rsyslogd", "[origin software=\"rsyslogd\"] rsyslogd was HUPed"),
    ])
    return f"{_stamp(i)} node-1 {program}: {message}"


def _sshd(rng: random.Random, i: int) -> str:
    ip, port, user = _ip(rng), rng.randint(1024, 65535), rng.choice(["deploy", "root", "admin", "git", "ubuntu"])
    message = rng.choices([
        f"Accepted publickey for {user} from {ip} port {port} ssh2: ED25519 SHA256:abc",
        f"pam_unix(sshd:session): session opened for user {user}(uid=1000) by (uid=0)",
        f"Received disconnect from {ip} port {port}:11: disconnected by user",
        f"Disconnected from user {user} {ip} port {port}",
        f"Connection closed by {ip} port {port} [preauth]",
        f"Failed password for {user} from {ip} port {port} ssh2",
        f"Invalid user {user}x from {ip} port {port}",
    ], weights=[8, 24, 24, 24, 15, 3, 2])[0]
    return f"{_stamp(i)} node-1 sshd[{rng.randint(1000, 99999)}]: {message}"


def _sudo(rng: random.Random, i: int) -> str:
    user = rng.choice(["deploy", "alice", "bob"])
    if rng.random() < 0.8:
        message = f"pam_unix(sudo:session): session opened for user root(uid=0) by {user}(uid=1000)"
    else:
        message = f"   {user} : TTY=pts/0 ; PWD=/home/{user} ; USER=root ; COMMAND=/usr/bin/systemctl status nginx"
    return f"{_stamp(i)} node-1 sudo: {message}"


def _nginx(rng: random.Random, i: int) -> str:
    url, status = rng.choices([
        ("/", 200), ("/static/app.js", 200), ("/api/v1/orders?page=2", 200), ("/favicon.ico", 304),
        ("/health", 200), ("/missing", 404), ("/search?q=select%20shoes", 200),
        ("/item.php?id=1%20UNION%20SELECT%20password%20FROM%20users", 403),
    ], weights=[30, 25, 20, 10, 10, 2, 2, 1])[0]
    agent = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
    return f'{_ip(rng)} - - [01/Mar/2026:10:00:{i % 60:02d} +0000] "GET {url} HTTP/1.1" {status} 512 "-" "{agent}"'


def _dpkg(rng: random.Random, i: int) -> str:
    package = rng.choice(["libc6", "openssl", "curl", "nginx", "nmap"])
    kind = rng.choices(["status installed", "status unpacked", "status half-configured", "configure",
                        "install"], weights=[30, 30, 30, 8, 2])[0]
    when = f"2026-03-01 10:{(i // 60) % 60:02d}:{i % 60:02d}"
    if kind == "install":
        return f"{when} install {package}:amd64 <none> 1.2.3-1"
    if kind == "configure":
        return f"{when} configure {package}:amd64 1.2.3-1 <none>"
    return f"{when} {kind} {package}:amd64 1.2.3-1"


MIX = [(_syslog, 40), (_sshd, 25), (_nginx, 25), (_sudo, 5), (_dpkg, 5)]


def write_log(path: Path, lines: int) -> None:
    rng = random.Random(20261127)
    makers = [maker for maker, _ in MIX]
    weights = [weight for _, weight in MIX]
    with path.open("w", encoding="utf-8") as out:
        for i in range(lines):
            out.write(rng.choices(makers, weights)[0](rng, i) + "\n")


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def build() -> tuple[Analyzer, int, float]:
    """The analyzer as the manager builds it; and the rules count and MB of memory loading them took."""
    gc.collect()
    before = rss_kb()
    rules = load_rules([shipped_rules_dir()])
    decoders = load_decoders([shipped_decoders_dir()])
    analyzer = Analyzer(Engine(RuleSet(rules.rules)), MitreCatalog.shipped(), "bench", MIN_ALERT_LEVEL, decoders)
    gc.collect()
    return analyzer, len(rules.rules), (rss_kb() - before) / 1024


GENERATED_RULES = 2000
_RSS_AFTER_LOAD = """
import gc, sys
from pathlib import Path
from vigil.alert import MitreCatalog
from vigil.manager.analysis.engine import Engine
from vigil.manager.analysis.fields import Fields
from vigil.manager.analysis.rule_loader import load_rules, shipped_rules_dir
from vigil.manager.analysis.ruleset import RuleSet
from vigil.manager.analysis.text_decoders import load_decoders, shipped_decoders_dir
from vigil.manager.analysis.analyzer import Analyzer
dirs = [shipped_rules_dir()] + [Path(p) for p in sys.argv[2:]]
rules = load_rules(dirs)
decoders = load_decoders([shipped_decoders_dir()])
analyzer = Analyzer(Engine(RuleSet(rules.rules)), MitreCatalog.shipped(), "m", 3, decoders)
if sys.argv[1] == "run":  # every rule as if it had run: its regexes compiled, its matcher generated
    for rule in rules.rules.values():
        rule.matches(Fields({}, "")), rule.render_description(Fields({}))
        for cond in [*rule.conditions, rule.raw]:
            if cond is not None and cond.regex is not None:
                cond.regex.search("")
gc.collect()
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
print(len(rules.rules), rss)
"""


def write_generated_rules(directory: Path, count: int) -> None:
    """`count` rules like users write them: children of the shipped sshd, web and sudo rules, each with
    a regex and an `exists` condition and a description naming a field, so they take the memory real ones do."""
    rng = random.Random(7)
    parents = [("5716", "dstuser"), ("31101", "url"), ("5402", "command")]
    out = ["rules:"]
    for n in range(count):
        parent, path = parents[n % len(parents)]
        out += [f"  - id: {110000 + n}", f"    level: {rng.randint(3, 12)}", f"    if_sid: {parent}",
                f"    fields: {{{path}: {{regex: '(?i)^/?gen{n}[a-z]+{rng.randint(0, 10**6)}'}}, "
                "srcip: {exists: true}}",
                f"    description: 'generated rule {n} for $({path})'", "    groups: [generated]"]
    (directory / "generated.yml").write_text("\n".join(out) + "\n", encoding="utf-8")


def memory_per_1000_rules(workdir: Path, mode: str = "load") -> tuple[int, float]:
    """(rules added, MB per 1,000 rules): resident memory of a fresh process with the shipped rules and
    with `GENERATED_RULES` more, the difference divided by what was added. `mode` "run": as if every
    rule had run once (rules compile their regexes and generate their matcher at first use)."""
    extra = workdir / "generated"
    if not extra.is_dir():
        extra.mkdir()
        write_generated_rules(extra, GENERATED_RULES)

    def rss(*dirs: Path) -> tuple[int, int]:
        result = subprocess.run([sys.executable, "-c", _RSS_AFTER_LOAD, mode, *map(str, dirs)], capture_output=True,
                                text=True, check=True, cwd=ROOT)
        count, kb = result.stdout.split()
        return int(count), int(kb)

    base_count, base_kb = rss()
    more_count, more_kb = rss(extra)
    added = more_count - base_count
    return added, (more_kb - base_kb) / 1024 / added * 1000


def run_vigil(analyzer: Analyzer, lines: list[str]) -> tuple[list[float], int, float]:
    """(lines/s per chunk, alerts, total seconds)."""
    agent = AgentRef("001", "node-1")
    rates: list[float] = []
    alerts = 0
    total = 0.0
    now = time.time()
    for start in range(0, len(lines), CHUNK):
        chunk = lines[start:start + CHUNK]
        began = time.perf_counter()
        for line in chunk:
            event = Event(module="logs", location="/var/log/mixed.log", timestamp=now, data={}, decoder=TEXT,
                          raw=line, agent=agent)
            alert = analyzer.analyse(event).alert
            if alert is not None:
                encode_alert(alert)
                alerts += 1
        took = time.perf_counter() - began
        total += took
        rates.append(len(chunk) / took)
    return rates, alerts, total


def run_fail2ban(log: Path) -> tuple[float | None, str]:
    """Seconds fail2ban-regex took over the log with its sshd filter, and what it matched."""
    binary = shutil.which("fail2ban-regex")
    if binary is None or not FAIL2BAN_FILTER.is_file():
        return None, "fail2ban-regex not installed (apt-get install fail2ban)"
    began = time.perf_counter()
    result = subprocess.run([binary, str(log), str(FAIL2BAN_FILTER)], capture_output=True, text=True, check=False)
    took = time.perf_counter() - began
    matched = next((line.strip() for line in result.stdout.splitlines() if line.startswith("Lines:")), "")
    return took, matched


def measure_vigil(lines: list[str]) -> tuple[list[float], int, float]:
    """`run_vigil` after a warm-up, on a fresh analyzer, as the manager runs it."""
    analyzer, _, _ = build()
    settle_for_throughput()
    run_vigil(analyzer, lines[:20_000])  # warm-up: caches, code paths
    analyzer, _, _ = build()
    settle_for_throughput()
    return run_vigil(analyzer, lines)


def measure_pure_python(log: Path) -> float:
    """Median chunk lines/s of the same log in a process that runs the hot path as pure Python
    (VIGIL_PURE_PYTHON=1, vigil/compiled.py): the baseline for what compiling it gains."""
    result = subprocess.run([sys.executable, __file__, "--only-vigil", str(log)], capture_output=True, text=True,
                            check=True, cwd=ROOT, env={**os.environ, PURE_PYTHON_ENV: "1"})
    return float(result.stdout.split()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--only-vigil", type=Path, help=argparse.SUPPRESS)  # median lines/s of this log, alone
    args = parser.parse_args(argv)
    if args.only_vigil:
        print(statistics.median(measure_vigil(args.only_vigil.read_text(encoding="utf-8").splitlines())[0]))
        return 0
    console = Console()
    workdir = Path(tempfile.mkdtemp(prefix="vigil-bench-logs-"))
    try:
        log = workdir / "mixed.log"
        write_log(log, args.lines)
        lines = log.read_text(encoding="utf-8").splitlines()
        _, rule_count, rules_mb = build()
        rates, alerts, vigil_seconds = measure_vigil(lines)
        pure_rate = measure_pure_python(log) if compiled.STATUS.active else None
        f2b_seconds, f2b_matched = run_fail2ban(log)
        added_rules, mb_per_1000 = memory_per_1000_rules(workdir)
        _, mb_per_1000_run = memory_per_1000_rules(workdir, "run")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    median = statistics.median(rates)
    overall = len(lines) / vigil_seconds
    f2b_rate = len(lines) / f2b_seconds if f2b_seconds else None
    rows = [
        ["lines", f"{len(lines):,}"],
        ["alerting lines (level >= 3)", f"{alerts:,} ({alerts / len(lines):.1%})"],
        ["Vigil lines/s, median 100,000-line chunk", f"{median:,.0f}"],
        ["Vigil lines/s, slowest / fastest chunk", f"{min(rates):,.0f} / {max(rates):,.0f}"],
        ["Vigil lines/s overall", f"{overall:,.0f}"],
        ["hot path", compiled.STATUS.detail],
        ["the same, hot path as pure Python (VIGIL_PURE_PYTHON=1): median chunk, and compiled / pure",
         f"{pure_rate:,.0f} / {median / pure_rate:.2f}x" if pure_rate else "n/a"],
        ["fail2ban-regex (sshd filter) lines/s", f"{f2b_rate:,.0f}" if f2b_rate else f2b_matched],
        ["fail2ban-regex result", f2b_matched if f2b_rate else "-"],
        ["Vigil / fail2ban-regex (median chunk vs its run)", f"{median / f2b_rate:.2f}x" if f2b_rate else "n/a"],
        ["shipped rules loaded / memory they and the decoders take", f"{rule_count} / {rules_mb:.1f} MB"],
        [f"memory per 1,000 rules ({added_rules:,} generated rules added to a fresh process)",
         f"{mb_per_1000:.1f} MB"],
        ["the same once every rule has run (regexes compiled, matchers generated)", f"{mb_per_1000_run:.1f} MB"],
        [f"target >= {TARGET_LINES_PER_SECOND:,} lines/s (stretch {STRETCH_LINES_PER_SECOND:,})",
         "PASS" if median >= TARGET_LINES_PER_SECOND else "FAIL"],
        [f"target >= {TARGET_RATIO:.0f}x fail2ban-regex",
         ("PASS" if median / f2b_rate >= TARGET_RATIO else "FAIL") if f2b_rate else "n/a"],
        [f"target <= {TARGET_MB_PER_1000_RULES:.0f} MB per 1,000 rules",
         "PASS" if mb_per_1000 <= TARGET_MB_PER_1000_RULES else "FAIL"],
    ]
    console.print(measure_table("Log analysis throughput, one core", rows))
    command = ".venv/bin/python bench/log_throughput.py" + (f" --lines {args.lines}" if args.lines != 1_000_000 else "")
    console.print(f"Command: {command}")
    console.print(f"nproc {os.cpu_count()}, Python {platform.python_version()}, {platform.platform()}; "
                  f"load average {os.getloadavg()[0]:.2f}", highlight=False)
    if args.markdown:
        print(markdown_table(["measure", "value"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
