"""The systemd units in deploy/ start commands that exist, with options `vigil` accepts."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = sorted((Path(__file__).resolve().parents[2] / "deploy" / "systemd").glob("*.service"))


def test_both_units_are_shipped() -> None:
    assert {u.name for u in UNITS} == {"vigil-manager.service", "vigil-agent.service"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_the_unit_runs_a_real_vigil_command(unit: Path) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(unit)
    argv = shlex.split(parser["Service"]["ExecStart"])
    assert argv[0] == "/opt/vigil/bin/vigil"
    args = argv[1:]
    result = subprocess.run([sys.executable, "-m", "vigil", *args[: args.index("--config")], "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_reads_the_unit_without_complaint(unit: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", "--recursive-errors=no", str(unit)],
                            capture_output=True, text=True, timeout=60)
    # ExecStart points at /opt/vigil, which this machine need not have: that one complaint is expected.
    problems = [line for line in result.stderr.splitlines() if line.strip() and "/opt/vigil/bin/vigil" not in line
                and "Unit is bound to inactive unit" not in line]
    assert problems == [], result.stderr
