"""The compiled hot path (vigil/compiled.py): used when current, never when stale, same answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vigil import compiled
from vigil.compiled import HOT_MODULES, MANIFEST, PURE_PYTHON_ENV, build_dir, check, sources_digest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # for bench/: its log mix and its reader of Wazuh's test cases


def test_the_hot_path_runs_compiled_as_the_set_up_builds_it() -> None:
    """scripts/bootstrap.sh builds it; a test run checks users get it (unless asked for pure Python)."""
    if os.environ.get(PURE_PYTHON_ENV) == "1":
        pytest.skip(f"{PURE_PYTHON_ENV}=1")
    assert compiled.STATUS.active, compiled.STATUS.detail
    import vigil.manager.analysis.engine as engine

    assert Path(engine.__file__).is_relative_to(build_dir())
    assert Path(engine.__file__).suffix != ".py"


def _manifest(directory: Path, digest: str, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).write_text(json.dumps({"digest": digest, "mypyc": "test", "files": files}))


def test_a_build_of_other_sources_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PURE_PYTHON_ENV, raising=False)
    files = {name: f"{name}.so" for name in HOT_MODULES}
    for rel in files.values():
        (tmp_path / rel).write_bytes(b"")
    _manifest(tmp_path, "0" * 64, files)
    status, found = check(tmp_path)
    assert not status.active and "older sources" in status.detail
    assert found == {}


def test_an_incomplete_build_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PURE_PYTHON_ENV, raising=False)
    _manifest(tmp_path, sources_digest(), {HOT_MODULES[0]: "missing.so"})
    status, _ = check(tmp_path)
    assert not status.active and "incomplete" in status.detail


def test_no_build_and_a_broken_manifest_mean_pure_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PURE_PYTHON_ENV, raising=False)
    assert "not built" in check(tmp_path)[0].detail
    (tmp_path / MANIFEST).write_text("{not json")
    assert "not built" in check(tmp_path)[0].detail


def test_pure_python_can_be_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PURE_PYTHON_ENV, "1")
    status, _ = check(build_dir())
    assert not status.active and PURE_PYTHON_ENV in status.detail


# Every line of the benchmark's mix and of Wazuh's test cases, through decoders and rules: what each
# gives (decoder, fields, rule, level, description) printed as JSON, one line per input.
_ANALYSE = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from bench.log_throughput import build
from vigil.compiled import STATUS
from vigil.event import Event
from vigil.manager.analysis.decoders import TEXT
analyzer, _, _ = build()
print(json.dumps({"status": STATUS.active}))
for line in open(sys.argv[2], encoding="utf-8"):
    line = line.rstrip("\\n")
    out = analyzer.analyse(Event(module="logs", location="/x", timestamp=1e9, data={}, decoder=TEXT, raw=line))
    alert = out.alert or {}
    print(json.dumps([out.decoder, out.child_decoder, out.fields, out.match.chain, alert.get("rule", {}).get("level"),
                      alert.get("rule", {}).get("description"), alert.get("full_log")], sort_keys=True, default=str))
"""


def _wazuh_lines() -> list[str]:
    from bench.wazuh_parity import CASES_DIR, read_cases

    return [line for ini in sorted(CASES_DIR.glob("*.ini")) for case in read_cases(ini) for line in case.lines]


def test_compiled_and_pure_python_give_the_same_results(tmp_path: Path) -> None:
    if os.environ.get(PURE_PYTHON_ENV) == "1" or not compiled.STATUS.active:
        pytest.skip(f"the compiled build is not in use: {compiled.STATUS.detail}")
    from bench.log_throughput import write_log

    corpus = tmp_path / "corpus.log"
    write_log(corpus, 20_000)
    wazuh = _wazuh_lines()
    with corpus.open("a", encoding="utf-8") as out:
        out.writelines(line + "\n" for line in wazuh)

    def run(pure: bool) -> list[str]:
        env = {**os.environ, PURE_PYTHON_ENV: "1" if pure else "0"}
        result = subprocess.run([sys.executable, "-c", _ANALYSE, str(ROOT), str(corpus)], env=env, cwd=ROOT,
                                capture_output=True, text=True, check=True, timeout=240)
        return result.stdout.splitlines()

    compiled_out, pure_out = run(False), run(True)
    assert json.loads(compiled_out[0]) == {"status": True}
    assert json.loads(pure_out[0]) == {"status": False}
    assert len(compiled_out) == len(pure_out) == 20_001 + len(wazuh)
    assert len(wazuh) > 500  # the Wazuh cases were found
    different = [(i, a, b) for i, (a, b) in enumerate(zip(compiled_out[1:], pure_out[1:], strict=True)) if a != b]
    assert not different, different[:3]
    levels = [json.loads(row)[4] for row in compiled_out[1:]]
    assert sum(level is not None for level in levels) > 1000  # alerts were compared, not only silence
