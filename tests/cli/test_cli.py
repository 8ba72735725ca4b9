"""The `vigil` command as a user runs it: clear errors for bad config and rules, logtest, validate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SEED_CREATE = {
    "Action": "create", "Type": "container", "from": "nginx", "scope": "local", "status": "create",
    "id": "e9730949586a38d8ab25990234fb8ccba428e3ec1c8bfbf12fe08ed279aaf11d",
    "time": 1599186260, "timeNano": 1599186260265422592,
    "Actor": {"ID": "e9730949586a38d8ab25990234fb8ccba428e3ec1c8bfbf12fe08ed279aaf11d",
              "Attributes": {"image": "nginx", "name": "nginx_container",
                             "maintainer": "NGINX Docker Maintainers <docker-maint@nginx.com>"}},
}


def vigil(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vigil", *args], input=stdin, capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def test_config_with_unknown_key_is_refused_with_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "vigil.yml"
    config.write_text("data_dir: /tmp/x\ndocker:\n  enabled: true\n  hots: tcp://1.2.3.4:2376\n")
    result = vigil("up", "--config", str(config))
    assert result.returncode == 2
    assert f"{config}:4: unknown option 'docker.hots'" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_with_wrong_type_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "vigil.yml"
    config.write_text("api:\n  port: many\n")
    result = vigil("rules", "list", "--config", str(config))
    assert result.returncode == 2
    assert f"{config}:2: api.port" in result.stderr


def test_broken_user_rule_stops_start_up_naming_file_and_line(tmp_path: Path) -> None:
    rules = tmp_path / "data" / "rules"
    rules.mkdir(parents=True)
    (rules / "local.yml").write_text(
        "rules:\n"
        "  - id: 100001\n    level: 5\n    if_sid: 87907\n    description: ok\n"
        "  - id: 100002\n    levle: 5\n    description: typo\n"
        "  - id: 100003\n    level: 5\n    description: bad regex\n    fields: {docker.Action: {regex: '(unclosed'}}\n"
    )
    result = vigil("up", "--data-dir", str(tmp_path / "data"), "--port", "0")
    assert result.returncode == 2
    assert f"{rules / 'local.yml'}:7: unknown rule key 'levle'" in result.stderr
    bad_regex = "rule 100003: fields: docker.Action: bad regex '(unclosed': missing )"
    assert f"{rules / 'local.yml'}:12: {bad_regex}" in result.stderr
    assert "absl" not in result.stderr  # RE2's own logging stays quiet
    assert not (tmp_path / "data" / "run.json").exists()


def test_rules_validate_reports_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text("rules:\n  - id: 87901\n    level: 3\n    description: dup\n")
    result = vigil("rules", "validate", str(tmp_path))
    assert result.returncode == 1
    assert "rule id 87901 is already defined" in result.stdout and "overwrite: true" in result.stdout
    (tmp_path / "bad.yml").write_text("rules:\n  - id: 87901\n    overwrite: true\n    level: 2\n    description: d\n")
    result = vigil("rules", "validate", str(tmp_path))
    assert result.returncode == 0, result.stdout
    assert result.stdout.startswith("ok: ")


def test_user_rule_overrides_shipped_rule_in_logtest(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "quiet.yml").write_text(
        "rules:\n  - id: 87901\n    overwrite: true\n    level: 1\n    if_sid: 87900\n"
        "    fields: {docker.Action: create}\n    description: quieter\n"
    )
    result = vigil("logtest", "--data-dir", str(tmp_path), "-", stdin=json.dumps(SEED_CREATE))
    assert result.returncode == 0, result.stderr
    assert "no alert: rule 87901 matched at level 1, below the alert level 3" in result.stdout


def test_logtest_shows_decoder_fields_rules_and_the_seed_alert(tmp_path: Path) -> None:
    result = vigil("logtest", "--data-dir", str(tmp_path), "-", stdin=json.dumps(SEED_CREATE))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "decoder: json" in out
    assert "docker.Actor.Attributes.name: 'nginx_container'" in out
    assert "87900: matched" in out and "87901: matched" in out and "87903: no match" not in out
    assert "Alert rule 87901 level 3: Docker: Container nginx_container created" in out
    alert = json.loads(vigil("logtest", "--json", "--data-dir", str(tmp_path), "-",
                             stdin=json.dumps(SEED_CREATE)).stdout)
    assert alert["timestamp"] == "2020-09-04T02:24:20.265+0000"
    assert alert["data"]["docker"] == SEED_CREATE
    assert alert["rule"]["id"] == "87901"


def test_logtest_rejects_garbage_clearly(tmp_path: Path) -> None:
    result = vigil("logtest", "--data-dir", str(tmp_path), "-", stdin='{"Type": "container", "Act')
    assert result.returncode == 2
    assert "input is not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_alerts_without_a_store_says_how_to_start(tmp_path: Path) -> None:
    result = vigil("alerts", "--data-dir", str(tmp_path / "none"))
    assert result.returncode == 2
    assert "vigil up" in result.stderr


def test_status_when_not_running(tmp_path: Path) -> None:
    result = vigil("status", "--data-dir", str(tmp_path), "--url", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "Vigil is not running" in result.stderr


AUTH_LINES = (
    "Mar  1 10:00:00 web-1 sshd[812]: Failed password for root from 203.0.113.9 port 51022 ssh2\n"
    "Mar  1 10:00:01 web-1 sshd[812]: Accepted password for root from 203.0.113.9 port 51023 ssh2\n"
    "\x00\xff garbage that no decoder knows \ufffd\n"
)


def test_logtest_takes_log_lines_and_a_users_rule_and_decoder(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "ssh.yml").write_text(
        "rules:\n  - id: 100200\n    level: 7\n    if_sid: 5716\n    fields: {tried: root}\n"
        "    description: 'ssh: $(tried) from $(srcip) failed'\n")
    (tmp_path / "decoders").mkdir()  # the user's decoder replaces the shipped one of the same name
    (tmp_path / "decoders" / "ssh.yml").write_text(
        "decoders:\n  - name: sshd-auth-result\n    parent: sshd\n"
        "    regex: '^(?P<outcome>Failed|Accepted) \\S+ for (?P<tried>\\S+) from (?P<srcip>\\S+)'\n")
    result = vigil("logtest", "--data-dir", str(tmp_path), "-", stdin=AUTH_LINES)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("Phase 1: decoding") == 3
    assert "decoder: sshd (child sshd-auth-result)" in out and "program_name: 'sshd'" in out
    assert "Alert rule 100200 level 7: ssh: root from 203.0.113.9 failed" in out
    accepted = out.split("Line 2:")[1].split("Line 3:")[0]
    assert "outcome: 'Accepted'" in accepted and "Alert rule 5715 level 3" in accepted  # the near miss
    assert "decoder: syslog" in out.split("Line 3:")[1]  # garbage: no program, no decoder, no crash
    alerts = [json.loads(line) for line in vigil("logtest", "--json", "--data-dir", str(tmp_path), "-",
                                                 stdin=AUTH_LINES).stdout.splitlines()]
    assert [a and a["rule"]["id"] for a in alerts] == ["100200", "5715", None]
    assert alerts[0]["predecoder"]["hostname"] == "web-1" and alerts[0]["decoder"] == {"parent": "sshd",
                                                                                      "name": "sshd"}


def test_a_bad_decoder_file_stops_logtest_with_its_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "decoders").mkdir()
    bad = tmp_path / "decoders" / "bad.yml"
    bad.write_text("decoders:\n  - name: x\n    program_name: [x]\n    regex: '(?P<a>'\n")
    result = vigil("logtest", "--data-dir", str(tmp_path), "-", stdin=AUTH_LINES)
    assert result.returncode == 2
    assert f"{bad}:2: decoder x: `regex`: bad regex" in result.stderr and "Traceback" not in result.stderr


def test_rules_validate_also_checks_the_users_decoders(tmp_path: Path) -> None:
    ok = vigil("rules", "validate", "--data-dir", str(tmp_path))
    assert ok.returncode == 0 and " decoders" in ok.stdout, ok.stderr
    (tmp_path / "decoders").mkdir()
    bad = tmp_path / "decoders" / "mine.yml"
    bad.write_text("decoders:\n  - name: mine\n    parent: nobody\n    regex: 'x'\n")
    result = vigil("rules", "validate", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert f"{bad}:2: parent 'nobody' is not defined" in result.stdout
