"""The shipped rules for sshd, sudo, su and PAM: a firing line and a near miss for each, and parity with
Wazuh on its own test cases (../shared/reference, read in place) for the files these rules cover."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from vigil.event import AgentRef, Event

from .support import analyzer

ROOT = Path(__file__).resolve().parents[2]
H = "Mar  1 10:00:00 web-1 "


def _parity() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wazuh_parity", ROOT / "bench" / "wazuh_parity.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["wazuh_parity"] = module
    spec.loader.exec_module(module)
    return module


def winner(lines: list[str]) -> tuple[str | None, int | None]:
    fresh = analyzer()
    alert = None
    now = time.time()
    for i, line in enumerate(lines):
        alert = fresh.analyse(text_event(line, now + i)).alert
    return (alert["rule"]["id"], alert["rule"]["level"]) if alert else (None, None)


EXAMPLES = [
    # sshd: each rule, then a line that is close but must not fire it
    ("sshd[1]: Failed password for root from 203.0.113.9 port 5 ssh2", "5716"),
    ("sshd[1]: Failed password for invalid user bob from 203.0.113.9 port 5 ssh2", "5710"),
    ("sshd[1]: Accepted publickey for deploy from 203.0.113.9 port 5 ssh2", "5715"),
    ("sshd[1]: Invalid user bob from 203.0.113.9 port 5", "5710"),
    ("sshd[1]: input_userauth_request: invalid user bob [preauth]", None),
    ("sshd[1]: User root from 203.0.113.9 not allowed because not listed in AllowUsers", "5718"),
    ("sshd[1]: Did not receive identification string from 203.0.113.9 port 5", "5706"),
    ("sshd[1]: Bad protocol version identification 'GET /' from 203.0.113.9 port 5", "5701"),
    ("sshd[1]: reverse mapping checking getaddrinfo for x.example [203.0.113.9] failed - POSSIBLE BREAK-IN ATTEMPT!",
     "5702"),
    ("sshd[1]: Address 203.0.113.9 maps to x.example, but this does not map back - POSSIBLE BREAK-IN ATTEMPT!", None),
    ("sshd[1]: error: maximum authentication attempts exceeded for root from 203.0.113.9 port 5 ssh2", "5758"),
    ("sshd[1]: error: PAM: authentication error for root from 203.0.113.9", "5760"),
    ("sshd[1]: Connection closed by 203.0.113.9 port 5 [preauth]", None),
    ("sshd[1]: Corrupted MAC on input.", "5748"),
    ("sshd[1]: Bad packet length 4081586742. [preauth]", "5749"),
    ("sshd[1]: Disconnecting: bad client public DH value [preauth]", "5747"),
    # sudo
    ("sudo:  alice : TTY=pts/1 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/id", "5402"),
    ("sudo:  alice : TTY=pts/1 ; PWD=/home/alice ; USER=www-data ; COMMAND=/bin/id", None),
    ("sudo:  alice : 1 incorrect password attempt ; TTY=pts/1 ; PWD=/ ; USER=root ; COMMAND=/bin/id", "5401"),
    ("sudo:  alice : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/ ; USER=root ; COMMAND=/bin/id", "5404"),
    ("sudo:  eve : user NOT in sudoers ; TTY=pts/1 ; PWD=/ ; USER=root ; COMMAND=/bin/id", "5405"),
    ("sudo[4]: pam_unix(sudo:auth): authentication failure; logname=alice uid=1000 euid=0 tty=/dev/pts/0 "
     "ruser=alice rhost=  user=alice", "200020"),
    ("sudo[4]: pam_unix(sudo:session): session opened for user root(uid=0) by alice(uid=1000)", None),
    # su
    ("su[9]: FAILED SU (to root) bob on pts/2", "5301"),
    ("su[9]: failed: pts/2 changing from bob to root", "5302"),
    ("su[9]: failed: pts/2 changing from bob to alice", None),
    ("su[9]: bob to root on /dev/pts/2", "5303"),
    ("su[9]: (to root) bob on pts/2", "5303"),
    ("su[9]: bob to alice on /dev/pts/2", None),
    # PAM
    ("login(pam_unix)[7]: authentication failure; logname= uid=0 euid=0 tty=tty1 ruser= rhost=  user=bob", "5503"),
    ("login(pam_unix)[7]: session opened for user bob by (uid=0)", "5501"),
    ("login(pam_unix)[7]: session closed for user bob", "5502"),
    ("vsftpd(pam_unix)[7]: check pass; user unknown", "5504"),
    ("sshd(pam_unix)[7]: 2 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=10.0.3.1  "
     "user=root", "2502"),
    ("login(pam_unix)[7]: password changed for bob", None),
]
BURSTS = [
    ("sshd[1]: Failed password for root from 203.0.113.9 port 5 ssh2", "5716", "5763"),
    ("sshd[1]: Invalid user bob from 203.0.113.9 port 5", "5710", "5712"),
    ("sshd[1]: User root from 203.0.113.9 not allowed because listed in DenyUsers", "5718", "5719"),
]


def text_event(line: str, when: float) -> Event:
    return Event(module="logs", location="/var/log/auth.log", timestamp=when, data={}, decoder="syslog", raw=line,
                 agent=AgentRef("001", "web-1"))


def example_events() -> list[Event]:
    """Every example line, and each burst eight times: the shipped-rule house test reaches rules with these."""
    now = time.time()
    lines = [H + line for line, _ in EXAMPLES] + [H + line for line, *_ in BURSTS for _ in range(8)]
    lines += [H + f"sshd[1]: Failed password for spray from 198.51.100.{i} port 5 ssh2" for i in range(10)]
    lines += [H + "sshd[1]: Accepted password for root from 203.0.113.9 port 5 ssh2"]  # after the bursts: 40112
    return [text_event(line, now + i) for i, line in enumerate(lines)]


@pytest.mark.parametrize(("line", "rule"), EXAMPLES)
def test_each_rule_fires_on_its_line_and_not_on_its_near_miss(line: str, rule: str | None) -> None:
    assert winner([H + line])[0] == rule


@pytest.mark.parametrize(("line", "base", "burst"), BURSTS)
def test_eight_failures_from_one_address_within_two_minutes_are_a_brute_force(line: str, base: str,
                                                                              burst: str) -> None:
    assert winner([H + line] * 7) == (base, 5)
    assert winner([H + line] * 8) == (burst, 10)
    other = H + line.replace("203.0.113.9", "198.51.100.1")
    assert winner([H + line] * 7 + [other]) == (base, 5)  # counted per source address


def test_failures_for_one_account_from_many_addresses_are_a_brute_force() -> None:
    lines = [H + f"sshd[1]: Failed password for root from 203.0.113.{i} port 5 ssh2" for i in range(10)]
    assert winner(lines[:9]) == ("5716", 5)
    assert winner(lines) == ("200021", 10)
    other_user = [*lines[:9], H + "sshd[1]: Failed password for admin from 203.0.113.99 port 5 ssh2"]
    assert winner(other_user) == ("5716", 5)  # counted per account


def test_a_success_after_a_brute_force_from_the_same_address_is_a_breach() -> None:
    failures = [H + "sshd[1]: Failed password for root from 203.0.113.9 port 5 ssh2"] * 8
    success = H + "sshd[1]: Accepted password for root from 203.0.113.9 port 5 ssh2"
    assert winner([*failures, success]) == ("40112", 12)
    assert winner([*failures, success, success]) == ("5715", 3)  # one alert per run of failures
    assert winner([*failures[:7], success]) == ("5715", 3)  # failures, but not a brute force
    assert winner([*failures, success.replace("203.0.113.9", "198.51.100.1")]) == ("5715", 3)  # another address
    sudo_failures = H + "sudo:  alice : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/ ; USER=root ; COMMAND=/bin/id"
    assert winner([sudo_failures, H + "su[9]: alice to root on /dev/pts/2"]) == ("5303", 3)  # no address: unlinked


def test_a_success_long_after_the_brute_force_is_not_linked_to_it() -> None:
    fresh = analyzer()
    now = time.time()
    for i in range(8):
        fresh.analyse(text_event(H + "sshd[1]: Failed password for root from 203.0.113.9 port 5 ssh2", now + i))
    late = fresh.analyse(text_event(H + "sshd[1]: Accepted password for root from 203.0.113.9 port 5 ssh2", now + 300))
    assert late.alert is not None and late.alert["rule"]["id"] == "5715"


WAZUH_CASES = ROOT.parent / "shared/reference/wazuh-4.14/tests/tests"


@pytest.mark.skipif(not WAZUH_CASES.is_dir(), reason="../shared/reference/wazuh-4.14 is not next to the project")
@pytest.mark.parametrize("name", ["sshd", "sudo", "su", "pam", "docker_integration"])
def test_parity_with_wazuh_on_the_files_these_rules_cover(name: str) -> None:
    """The issue's targets, per file, for the sources Vigil has decoders and rules for so far."""
    parity = _parity()
    (result,) = parity.measure([name])
    assert result.alerting >= 2
    assert result.parity >= parity.TARGET_PARITY, [o.session.lines[-1] for o in result.misses]
    assert result.noise_share is None or result.noise_share <= parity.TARGET_NOISE, \
        [o.session.lines[-1] for o in result.noise]


def test_the_case_reader_keeps_repeated_lines_as_one_session(tmp_path: Path) -> None:
    path = tmp_path / "x.ini"
    path.write_text("; comment\n[burst]\nlog 1 pass = a\nlog 1 pass = b\nlog 2 fail = c\nlog 3 pass = d\n"
                    "rule = 5712\nalert = 10\ndecoder = sshd\n\n[quiet]\nlog 1 pass = e\nrule = 1\nalert = 0\n")
    sessions = _parity().read_cases(path)
    assert [(s.section, s.number, s.lines, s.rule, s.level) for s in sessions] == [
        ("burst", 1, ["a", "b"], "5712", 10), ("burst", 3, ["d"], "5712", 10), ("quiet", 1, ["e"], "1", 0)]
