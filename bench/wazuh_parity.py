"""Parity with Wazuh on Wazuh's own test cases (issue 4): detection and noise, per file.

    .venv/bin/python bench/wazuh_parity.py [--markdown] [--show-misses] [FILE ...]

Reads `../shared/reference/wazuh-4.14/tests/tests/*.ini` in place (GPLv2 reference data, never
copied): each section holds `log N pass = <line>` entries and the `rule`, `alert` (level) and
`decoder` Wazuh gives. Entries with the same N form one session (that is how Wazuh tests frequency
rules); the expectation is about the session's last line. `fail` entries only say "not this rule",
so they have no expected level and are left out of both measures.

Each session goes through Vigil's own analysis (shipped decoders and rules, a fresh correlation
state, lines one second apart), as `vigil logtest` does. Per file:

- detection parity: of the sessions where Wazuh alerts at level >= 5, the share where Vigil also
  alerts at level >= 5 on the last line (any Vigil rule);
- noise: of the sessions where Wazuh gives level < 3, the share where Vigil alerts at level >= 5.

Targets: parity >= 90 %, noise <= 5 %.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.tables import markdown_table  # noqa: E402
from vigil.alert import MitreCatalog  # noqa: E402
from vigil.event import AgentRef, Event  # noqa: E402
from vigil.manager.analysis.analyzer import Analyzer  # noqa: E402
from vigil.manager.analysis.decoders import TEXT  # noqa: E402
from vigil.manager.analysis.engine import Engine  # noqa: E402
from vigil.manager.analysis.rule_loader import load_rules, shipped_rules_dir  # noqa: E402
from vigil.manager.analysis.ruleset import RuleSet  # noqa: E402
from vigil.manager.analysis.text_decoders import TextDecoders, load_decoders, shipped_decoders_dir  # noqa: E402

CASES_DIR = ROOT.parent / "shared/reference/wazuh-4.14/tests/tests"
# The list: sshd, syslog, sudo/su/pam, nginx, web, web attacks, apache, kernel and docker; and the
# kernel's AppArmor and netfilter lines. (Wazuh has no test cases for cron, dpkg, yum, apk, dockerd or the kubelet.)
FILES = ["sshd", "syslog", "sudo", "su", "pam", "nginx", "web_rules", "web_appsec", "apache", "kernel_usb",
         "apparmor", "iptables", "docker_integration"]
TARGET_PARITY = 0.90
TARGET_NOISE = 0.05
ALERTING, QUIET = 5, 3

_SECTION = re.compile(r"^\[(?P<name>.*)\]\s*$")
_LOG = re.compile(r"^log (?P<n>\d+) (?P<kind>pass|fail) = (?P<line>.*)$")
_EXPECT = re.compile(r"^(?P<key>rule|alert|decoder) =\s*(?P<value>.*)$")


@dataclass
class Session:
    """One Wazuh test case: the lines fed in order, and what Wazuh gives the last one."""

    file: str
    section: str
    number: int
    lines: list[str]
    rule: str | None
    level: int | None


def read_cases(path: Path) -> list[Session]:
    """Sessions of one .ini file, `pass` entries only (configparser would drop repeated keys)."""
    sessions: list[Session] = []
    section: dict[str, str] = {}
    logs: dict[int, list[str]] = {}
    name = ""

    def close() -> None:
        level = section.get("alert", "").strip()
        for number, lines in logs.items():
            sessions.append(Session(path.stem, name, number, lines, section.get("rule") or None,
                                    int(level) if level.isdigit() else None))

    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not raw.strip() or raw.startswith((";", "#")):
            continue
        if match := _SECTION.match(raw):
            close()
            name, section, logs = match["name"], {}, {}
        elif match := _LOG.match(raw):
            if match["kind"] == "pass":
                logs.setdefault(int(match["n"]), []).append(match["line"])
        elif match := _EXPECT.match(raw):
            section[match["key"]] = match["value"].strip()
    close()
    return sessions


@dataclass
class Outcome:
    session: Session
    vigil_rule: str | None
    vigil_level: int | None


def run_session(session: Session, ruleset: RuleSet, mitre: MitreCatalog, decoders: TextDecoders) -> Outcome:
    analyzer = Analyzer(Engine(ruleset), mitre, "parity", 1, decoders)
    agent = AgentRef("000", "parity")
    start = time.time()
    alert = None
    for i, line in enumerate(session.lines):
        event = Event(module="logs", location="parity", timestamp=start + i, data={}, decoder=TEXT, raw=line,
                      agent=agent)
        alert = analyzer.analyse(event).alert
    if alert is None:
        return Outcome(session, None, None)
    return Outcome(session, alert["rule"]["id"], int(alert["rule"]["level"]))


@dataclass
class FileResult:
    file: str
    sessions: int
    alerting: int
    detected: int
    quiet: int
    noisy: int
    misses: list[Outcome]
    noise: list[Outcome]

    @property
    def parity(self) -> float | None:
        return self.detected / self.alerting if self.alerting else None

    @property
    def noise_share(self) -> float | None:
        return self.noisy / self.quiet if self.quiet else None


def measure(files: list[str]) -> list[FileResult]:
    rules = load_rules([shipped_rules_dir()])
    ruleset, mitre = RuleSet(rules.rules), MitreCatalog.shipped()
    decoders = load_decoders([shipped_decoders_dir()])
    results = []
    for name in files:
        path = CASES_DIR / f"{name}.ini"
        sessions = read_cases(path) if path.is_file() else []
        outcomes = [run_session(s, ruleset, mitre, decoders) for s in sessions if s.level is not None]
        alerting = [o for o in outcomes if o.session.level is not None and o.session.level >= ALERTING]
        quiet = [o for o in outcomes if o.session.level is not None and o.session.level < QUIET]
        misses = [o for o in alerting if (o.vigil_level or 0) < ALERTING]
        noise = [o for o in quiet if (o.vigil_level or 0) >= ALERTING]
        results.append(FileResult(name, len(outcomes), len(alerting), len(alerting) - len(misses), len(quiet),
                                  len(noise), misses, noise))
    return results


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f} %"


HEADERS = ["file", "sessions", "Wazuh ≥ 5", "Vigil also ≥ 5", "parity", "Wazuh < 3", "Vigil ≥ 5 there", "noise"]


def rows(results: list[FileResult]) -> list[list[str]]:
    out = [[r.file, str(r.sessions), str(r.alerting), str(r.detected), _share(r.parity), str(r.quiet), str(r.noisy),
            _share(r.noise_share)] for r in results]
    total = FileResult("all", sessions=sum(r.sessions for r in results), alerting=sum(r.alerting for r in results),
                       detected=sum(r.detected for r in results), quiet=sum(r.quiet for r in results),
                       noisy=sum(r.noisy for r in results), misses=[], noise=[])
    out.append([total.file, str(total.sessions), str(total.alerting), str(total.detected), _share(total.parity),
                str(total.quiet), str(total.noisy), _share(total.noise_share)])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help=f"case files without .ini (default: {' '.join(FILES)})")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--show-misses", action="store_true", help="list each missed and each noisy session")
    args = parser.parse_args(argv)
    if not CASES_DIR.is_dir():
        print(f"Wazuh's test cases not found at {CASES_DIR}", file=sys.stderr)
        return 2
    results = measure(args.files or FILES)
    console = Console()
    table = Table(title="Parity with Wazuh 4.14 on its own test cases")
    for header in HEADERS:
        table.add_column(header, justify="left" if header == "file" else "right")
    body = rows(results)
    for row in body:
        table.add_row(*row)
    console.print(table)
    command = ".venv/bin/python bench/wazuh_parity.py" + (" " + " ".join(args.files) if args.files else "")
    console.print(f"Command: {command}   targets: parity ≥ {TARGET_PARITY:.0%}, noise ≤ {TARGET_NOISE:.0%}")
    if args.show_misses:
        for r in results:
            for kind, outcomes in (("miss ", r.misses), ("noise", r.noise)):
                for o in outcomes:
                    s = o.session
                    console.print(escape(f"{kind} {r.file} [{s.section}] log {s.number}: Wazuh {s.rule}/{s.level}, "
                                         f"Vigil {o.vigil_rule}/{o.vigil_level}: {s.lines[-1][:110]}"),
                                  highlight=False, soft_wrap=True)
    if args.markdown:
        print(markdown_table(HEADERS, body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
