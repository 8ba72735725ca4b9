"""The syslog header: explicit formats, hostile lines, and every line of Wazuh's own sshd/sudo/su/pam/syslog
test cases (../shared/reference, read in place, GPLv2) as an oracle for the program name."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from vigil.manager.analysis.syslog_header import SyslogHeader, parse_header

WAZUH_TESTS = Path(__file__).resolve().parents[3] / "shared/reference/wazuh-4.14/tests/tests"


@pytest.mark.parametrize(("line", "expected"), [
    ("Feb  9 11:44:56 someserver sshd[1234]: error: Could not stat",
     SyslogHeader("error: Could not stat", "Feb  9 11:44:56", "someserver", "sshd", "1234", format="rfc3164")),
    ("Apr 22 17:51:51 enigma su: dcid to root on /dev/ttyp1",
     SyslogHeader("dcid to root on /dev/ttyp1", "Apr 22 17:51:51", "enigma", "su", format="rfc3164")),
    ("Nov 11 22:46:29 localhost su(pam_unix)[23164]: authentication failure;",
     SyslogHeader("authentication failure;", "Nov 11 22:46:29", "localhost", "su(pam_unix)", "23164",
                  format="rfc3164")),
    ("2015 Nov 13 13:40:01 ether rsyslogd-2177: imuxsock begins to drop messages",
     SyslogHeader("imuxsock begins to drop messages", "2015 Nov 13 13:40:01", "ether", "rsyslogd-2177",
                  format="rfc3164")),
    ("Nov 13 2015 13:40:01 ether cron[5]: ok",
     SyslogHeader("ok", "Nov 13 2015 13:40:01", "ether", "cron", "5", format="rfc3164")),
    ("<86>Feb  9 11:44:56 host postfix/smtpd[77]: connect from x",
     SyslogHeader("connect from x", "Feb  9 11:44:56", "host", "postfix/smtpd", "77", facility=10, severity=6,
                  format="rfc3164")),
    ("2024-01-01T10:00:00.123456+00:00 node-1 kernel: Out of memory: Killed process 42",
     SyslogHeader("Out of memory: Killed process 42", "2024-01-01T10:00:00.123456+00:00", "node-1", "kernel",
                  format="iso8601")),
    ("2020-03-23 06:47:42.801612-0700  localhost sshd[3186]: error: PAM: unknown user",
     SyslogHeader("error: PAM: unknown user", "2020-03-23 06:47:42.801612-0700", "localhost", "sshd", "3186",
                  format="iso8601")),
    ('<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 [exampleSDID@32473 iut="3" x="a\\]b"] '
     "'su root' failed for lonvick on /dev/pts/8",
     SyslogHeader("'su root' failed for lonvick on /dev/pts/8", "2003-10-11T22:14:15.003Z", "mymachine.example.com",
                  "su", None, facility=4, severity=2, format="rfc5424")),
    ("<165>1 - - - - - -", SyslogHeader("", facility=20, severity=5, format="rfc5424")),
])
def test_known_formats(line: str, expected: SyslogHeader) -> None:
    assert parse_header(line) == expected


@pytest.mark.parametrize("line", [
    "",
    "just a message with no header",
    "Feb  9 11:44:56",  # truncated after the time
    "Feb  9 11:44:56 host",  # no program
    "Feb 99 11:44:56 host sshd[1]: day out of range is still text, not a crash",
    "<999>Feb  9 11:44:56 host sshd: priority out of range",
    "\x00\x00\ufffd binary garbage \x1b[31m",
    "<34>1 2003-10-11T22:14:15Z host app - - [unterminated sd",
])
def test_lines_without_a_usable_header_are_kept_whole(line: str) -> None:
    header = parse_header(line)
    if header.format == "none":
        assert header.message == line and header.program_name is None
    else:  # a header was found: the parts must come from the line, and nothing is invented
        assert header.program_name and header.program_name in line
        assert header.facility is None or 0 <= header.facility <= 23


def test_a_huge_line_is_parsed_in_linear_time() -> None:
    line = "Feb  9 11:44:56 host sshd[1]: " + "A" * 10_000_000
    header = parse_header(line)
    assert header.program_name == "sshd" and len(header.message) == 10_000_000
    assert parse_header("x" * 10_000_000).format == "none"


def test_fields_use_wazuh_names_and_leave_out_what_is_missing() -> None:
    assert parse_header("Apr 22 17:51:51 enigma su: dcid").fields() == {
        "timestamp": "Apr 22 17:51:51", "hostname": "enigma", "program_name": "su"}
    assert parse_header("plain").fields() == {}


def _wazuh_cases(name: str) -> list[tuple[str, str]]:
    """(decoder Wazuh expects, log line) for every `log N pass` line of one of Wazuh's .ini files."""
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",), comment_prefixes=(";",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(WAZUH_TESTS / f"{name}.ini")
    return [(parser[section].get("decoder", "").strip(), value)
            for section in parser.sections() for key, value in parser[section].items() if key.startswith("log ")]


@pytest.mark.skipif(not WAZUH_TESTS.is_dir(), reason="../shared/reference/wazuh-4.14 is not next to the project")
@pytest.mark.parametrize("name", ["sshd", "sudo", "su", "pam", "syslog"])
def test_every_line_of_wazuhs_cases_has_its_header_found(name: str) -> None:
    cases = _wazuh_cases(name)
    assert len(cases) >= 5
    for decoder, line in cases:
        header = parse_header(line)
        assert header.format != "none" and header.program_name, line
        if decoder in ("sshd", "sudo", "su"):
            assert header.program_name.split("(")[0] == decoder, line
        elif decoder == "pam":
            assert header.program_name.endswith("(pam_unix)"), line
        assert line.endswith(header.message)
