"""The configuration file: defaults that work with no file, and errors that name the file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.config import load_config
from vigil.errors import ConfigError, LoadError, Problem


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vigil.yml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_defaults_with_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIGIL_DATA_DIR", raising=False)
    config = load_config(None)
    assert config.data_dir == Path("vigil-data")
    assert config.rules_dir == Path("vigil-data/rules")
    assert config.alerts_json_path == Path("vigil-data/alerts.json")
    assert config.db_path == Path("vigil-data/vigil.db")
    assert config.log_level == "info"
    assert (config.api.enabled, config.api.host, config.api.port) == (True, "127.0.0.1", 7555)
    assert config.docker.enabled and config.docker.inspect and config.docker.host is None
    assert config.docker.max_event_bytes == 1024 * 1024
    assert (config.analysis.fold_window_seconds, config.analysis.min_alert_level) == (60.0, 3)
    assert config.outputs.alerts_json.enabled
    assert config.agent.id == "000" and config.agent.name and config.manager.name


def test_data_dir_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VIGIL_DATA_DIR", str(tmp_path / "data"))
    assert load_config(None).rules_dir == tmp_path / "data" / "rules"


def test_empty_and_comment_only_files_are_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).api.port == 7555
    assert load_config(write(tmp_path, "# nothing set\n")).api.port == 7555


def test_values_are_read(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """\
data_dir: /var/lib/vigil
log_level: debug
api:
  port: 8080
docker:
  host: tcp://10.0.0.5:2376
  tls:
    ca_cert: /etc/vigil/ca.pem
analysis:
  fold_window_seconds: 0
  rules_dir: /etc/vigil/rules
outputs:
  alerts_json:
    path: /var/log/vigil/alerts.json
""",
        )
    )
    assert config.api.port == 8080 and config.log_level == "debug"
    assert config.docker.host == "tcp://10.0.0.5:2376"
    assert config.docker.tls is not None and config.docker.tls.ca_cert == Path("/etc/vigil/ca.pem")
    assert config.analysis.fold_window_seconds == 0
    assert config.rules_dir == Path("/etc/vigil/rules")
    assert config.alerts_json_path == Path("/var/log/vigil/alerts.json")
    assert config.db_path == Path("/var/lib/vigil/vigil.db")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "api:\n  port: 7555\ndockr:\n  enabled: false\n")
    [problem] = problems_of(path)
    assert (problem.file, problem.line) == (str(path), 3)
    assert "unknown option 'dockr'" in problem.message


def test_unknown_nested_key(tmp_path: Path) -> None:
    path = write(tmp_path, "docker:\n  enabled: true\n  hots: unix:///run/docker.sock\n")
    [problem] = problems_of(path)
    assert (problem.file, problem.line) == (str(path), 3)
    assert "unknown option 'docker.hots'" in problem.message


def test_unknown_key_in_flow_style(tmp_path: Path) -> None:
    path = write(tmp_path, "log_level: info\ndocker: {hots: x}\n")
    [problem] = problems_of(path)
    assert (problem.file, problem.line) == (str(path), 2)
    assert "'docker.hots'" in problem.message


def test_unknown_key_three_levels_down(tmp_path: Path) -> None:
    path = write(tmp_path, "docker:\n  tls:\n    verify: true\n    ca_crt: /ca.pem\n")
    [problem] = problems_of(path)
    assert (problem.line, "'docker.tls.ca_crt'" in problem.message) == (4, True)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("api:\n  host: 0.0.0.0\n  port: http\n", 3, "api.port: Input should be a valid integer"),
        ("api:\n  port: 70000\n", 2, "api.port: Input should be less than or equal to 65535"),
        ("log_level: loud\n", 1, "log_level: Input should be 'debug', 'info', 'warning' or 'error'"),
        ("docker: true\n", 1, "docker: Input should be a valid dictionary"),
        ("docker:\n  tls:\n    verify: maybe\n", 3, "docker.tls.verify: Input should be a valid boolean"),
        ("analysis:\n  min_alert_level: 17\n", 2, "analysis.min_alert_level"),
        ("analysis:\n  fold_window_seconds: -1\n", 2, "analysis.fold_window_seconds"),
        ("docker:\n  max_event_bytes: 10\n", 2, "greater than or equal to 1024"),
    ],
)
def test_wrong_type_or_range(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = write(tmp_path, text)
    [problem] = problems_of(path)
    assert (problem.file, problem.line) == (str(path), line)
    assert words in problem.message


def test_every_problem_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "dockr: {}\napi:\n  port: http\nanalysis:\n  min_alert_level: 99\n")
    problems = problems_of(path)
    assert sorted(p.line for p in problems) == [1, 3, 5]
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith("configuration: 3 problem(s)")
    assert f"{path}:3: api.port" in str(info.value)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- docker\n- api\n")
    [problem] = problems_of(path)
    assert (problem.file, problem.line) == (str(path), 1)
    assert "must be a mapping" in problem.message


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "api:\n  port: 7555\n  host: [127.0.0.1\n")
    with pytest.raises(LoadError) as info:
        load_config(path)
    [problem] = info.value.problems
    assert problem.file == str(path)
    assert problem.line in (3, 4)
    assert "YAML syntax" in problem.message


@pytest.mark.parametrize("case", ["syntax", "missing"])
def test_every_config_problem_is_a_config_error(tmp_path: Path, case: str) -> None:
    path = write(tmp_path, "api: [\n") if case == "syntax" else tmp_path / "absent.yml"
    with pytest.raises(ConfigError):
        load_config(path)
