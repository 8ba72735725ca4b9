"""Text decoders: the loader's errors, the shipped sshd/sudo/su decoders on real lines, and a text line
through the analyzer into a Wazuh-shaped alert (predecoder, decoder parent, data)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vigil.event import AgentRef, Event
from vigil.manager.analysis.analyzer import Analyzer
from vigil.manager.analysis.engine import Engine
from vigil.manager.analysis.rule_loader import load_rules, shipped_rules_dir
from vigil.manager.analysis.ruleset import RuleSet
from vigil.manager.analysis.text_decoders import DecoderLoadError, TextDecoders, load_decoders, shipped_decoders_dir

from .support import mitre, write_rules


@pytest.fixture(scope="module")
def shipped() -> TextDecoders:
    return load_decoders([shipped_decoders_dir()])


@pytest.mark.parametrize(("line", "name", "child", "fields"), [
    ("Mar  1 10:00:00 web-1 sshd[812]: Failed password for invalid user admin from 203.0.113.9 port 51022 ssh2",
     "sshd", "sshd-auth-result", {"outcome": "Failed", "method": "password", "dstuser": "admin",
                                  "srcip": "203.0.113.9", "srcport": "51022"}),
    ("Mar  1 10:00:01 web-1 sshd[812]: Accepted publickey for deploy from 2001:db8::7 port 40022 ssh2: ED25519 x",
     "sshd", "sshd-auth-result", {"outcome": "Accepted", "method": "publickey", "dstuser": "deploy",
                                  "srcip": "2001:db8::7", "srcport": "40022"}),
    ("Mar  1 10:00:02 web-1 sshd[812]: Invalid user oracle from 198.51.100.4 port 33211",
     "sshd", "sshd-invalid-user", {"dstuser": "oracle", "srcip": "198.51.100.4", "srcport": "33211"}),
    ("Mar  1 10:00:03 web-1 sshd[812]: Server listening on 0.0.0.0 port 22.", "sshd", None, {}),
    ("Mar  1 10:00:04 web-1 sudo:   alice : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/home/alice ; "
     "USER=root ; COMMAND=/usr/bin/apt install nmap",
     "sudo", "sudo-command", {"srcuser": "alice", "status": "3 incorrect password attempts", "tty": "pts/1",
                              "pwd": "/home/alice", "dstuser": "root", "command": "/usr/bin/apt install nmap"}),
    ("Mar  1 10:00:05 web-1 su[99]: FAILED SU (to root) bob on pts/2", "su", "su-failed-linux",
     {"dstuser": "root", "srcuser": "bob", "tty": "pts/2"}),
    ("Mar  1 10:00:06 web-1 cron[5]: (root) CMD (run-parts /etc/cron.hourly)", "cron", "cron-command",
     {"dstuser": "root", "action": "CMD", "command": "run-parts /etc/cron.hourly"}),
    ("Mar  1 10:00:07 web-1 systemd[1]: Started Session 5 of user root.", None, None, {}),
    ("no header at all", None, None, {}),
])
def test_shipped_decoders_read_real_lines(shipped: TextDecoders, line: str, name: str | None, child: str | None,
                                          fields: dict[str, str]) -> None:
    decoded = shipped.decode(line)
    assert (decoded.name, decoded.child, decoded.fields) == (name, child, fields)


def test_a_decoder_without_a_program_is_chosen_by_its_prematch(tmp_path: Path) -> None:
    (tmp_path / "d.yml").write_text(
        "decoders:\n"
        "  - name: dpkg\n"
        "    prematch: '^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d (?:install|remove|upgrade) '\n"
        "    regex: '^\\S+ \\S+ (?P<action>\\S+) (?P<package>[^\\s:]+)(?::(?P<arch>\\S+))? (?P<old_version>\\S+) "
        "(?P<version>\\S+)'\n", encoding="utf-8")
    decoders = load_decoders([tmp_path])
    decoded = decoders.decode("2024-05-02 10:11:12 install nmap:amd64 <none> 7.93+dfsg1-1")
    assert decoded.name == "dpkg" and decoded.header.format == "none"
    assert decoded.fields == {"action": "install", "package": "nmap", "arch": "amd64", "old_version": "<none>",
                              "version": "7.93+dfsg1-1"}
    assert decoders.decode("2024-05-02 10:11:12 status installed nmap:amd64 7.93").name is None


def test_a_users_decoder_replaces_a_shipped_one_by_name(tmp_path: Path, shipped: TextDecoders) -> None:
    (tmp_path / "mine.yml").write_text(
        "decoders:\n  - name: sshd-invalid-user\n    parent: sshd\n    regex: '^Invalid user (?P<who>\\S+)'\n",
        encoding="utf-8")
    decoders = load_decoders([shipped_decoders_dir(), tmp_path])
    assert len(decoders) == len(shipped)
    decoded = decoders.decode("Mar  1 10:00:02 web-1 sshd[812]: Invalid user oracle from 198.51.100.4")
    assert (decoded.child, decoded.fields) == ("sshd-invalid-user", {"who": "oracle"})


@pytest.mark.parametrize(("text", "line", "message"), [
    ("decoders:\n  - name: x\n    program_name: [x]\n    colour: red\n", 2, "unknown key(s) colour"),
    ("decoders:\n  - program_name: [x]\n", 2, "`name` must be a non-empty string"),
    ("decoders:\n  - name: x\n    program_name: [x]\n    regex: '(?P<a>'\n", 2, "`regex`: bad regex"),
    ("decoders:\n  - name: x\n    program_name: [x]\n    regex: '(a)(?P<b>c)'\n", 2, "must be named"),
    ("decoders:\n  - name: x\n", 2, "a parent needs `program_name`"),
    ("decoders:\n  - name: x\n    program_name: [x]\n  - name: y\n    parent: x\n", 4, "a child needs"),
    ("decoders:\n  - name: y\n    parent: nobody\n    regex: 'a'\n", 2, "parent 'nobody' is not defined"),
    ("decoders:\n  - name: x\n    program_name: [x]\n  - name: y\n    parent: x\n    regex: a\n"
     "  - name: z\n    parent: y\n    regex: b\n", 7, "is itself a child"),
    ("decoders:\n  - name: y\n    parent: x\n    program_name: [y]\n    regex: a\n", 2, "a child is chosen by"),
    ("rules: []\n", 1, "holds one key, `decoders`"),
    ("decoders: [\n", 2, "YAML syntax"),
])
def test_a_bad_decoder_file_is_refused_with_the_file_and_line(tmp_path: Path, text: str, line: int,
                                                               message: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DecoderLoadError) as caught:
        load_decoders([tmp_path])
    assert any(p.file == str(path) and p.line == line and message in p.message for p in caught.value.problems), \
        caught.value.problems


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text("decoders:\n  - name: a\n  - name: b\n    program_name: 5\n", encoding="utf-8")
    (tmp_path / "b.yml").write_text("decoders: 3\n", encoding="utf-8")
    with pytest.raises(DecoderLoadError) as caught:
        load_decoders([tmp_path])
    assert len(caught.value.problems) == 3


def test_a_text_line_becomes_a_wazuh_shaped_alert(tmp_path: Path, shipped: TextDecoders) -> None:
    write_rules(tmp_path, """
        rules:
          - id: 100100
            level: 7
            if_sid: 5716
            fields: {dstuser: root, program_name: sshd}
            description: "sshd: authentication failed for $(dstuser) from $(srcip)"
            groups: [authentication_failed]
        """)
    rules = load_rules([shipped_rules_dir(), tmp_path])
    analyzer = Analyzer(Engine(RuleSet(rules.rules)), mitre(), "m", 3, shipped)
    line = "Mar  1 10:00:00 web-1 sshd[812]: Failed password for root from 203.0.113.9 port 51022 ssh2"
    event = Event(module="logs", location="/var/log/auth.log", timestamp=time.time(), data={}, decoder="syslog",
                  raw=line, agent=AgentRef("001", "web-1"))
    analysed = analyzer.analyse(event)
    assert analysed.decoder == "sshd" and analysed.child_decoder == "sshd-auth-result"
    alert = analysed.alert
    assert alert is not None
    assert alert["rule"]["id"] == "100100"
    assert alert["rule"]["description"] == "sshd: authentication failed for root from 203.0.113.9"
    assert alert["predecoder"] == {"timestamp": "Mar  1 10:00:00", "hostname": "web-1", "program_name": "sshd",
                                   "pid": "812"}
    assert alert["decoder"] == {"parent": "sshd", "name": "sshd"}
    assert alert["data"] == {"outcome": "Failed", "method": "password", "dstuser": "root", "srcip": "203.0.113.9",
                             "srcport": "51022"}
    assert alert["full_log"] == line and alert["location"] == "/var/log/auth.log"
    # The near miss: the same program, a success; the rule must stay quiet (the shipped 5715 says level 3).
    ok = Event(module="logs", location="/var/log/auth.log", timestamp=time.time(), data={}, decoder="syslog",
               raw=line.replace("Failed password", "Accepted password"), agent=AgentRef("001", "web-1"))
    quiet = analyzer.analyse(ok).alert
    assert quiet is not None and quiet["rule"]["id"] == "5715"


def test_a_json_container_line_keeps_what_the_collector_knew(shipped: TextDecoders) -> None:
    """A pod's JSON log line is decoded as JSON, and the alert still names the pod (the collector's keys
    win over the line's own, so a line cannot claim another pod)."""
    rules = load_rules([shipped_rules_dir()])
    analyzer = Analyzer(Engine(RuleSet(rules.rules)), mitre(), "m", 3, shipped)
    line = ('{"remote_addr": "203.0.113.7", "request": "GET /item?id=1 UNION SELECT password FROM users HTTP/1.1", '
            '"status": 403, "kubernetes": {"pod": "forged"}}')
    where = {"kubernetes": {"pod": "shop-7d9f", "namespace": "prod", "container": "nginx"}}
    out = analyzer.analyse(Event(module="logs", location="/var/log/containers/x.log", timestamp=time.time(),
                                 data=dict(where), decoder="syslog", raw=line, agent=AgentRef()))
    assert out.alert is not None and out.alert["rule"]["id"] == "200211"
    assert out.alert["data"]["kubernetes"] == where["kubernetes"]
    assert out.alert["data"]["remote_addr"] == "203.0.113.7"
