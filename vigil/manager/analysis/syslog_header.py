"""The syslog header of a text log line: when, which host, which program (Wazuh's pre-decoding).

Program decoders are chosen by `program_name` and read only the message after the header, so this
runs first on every text line. Recognised, each with an optional `<PRI>` in front:

    Feb  9 11:44:56 host sshd[1234]: message              RFC 3164 (BSD syslog)
    2015 Nov 13 13:40:01 host prog: message               the same, with the year first
    Nov 13 2015 13:40:01 host prog: message               the same, with the year after the day
    2024-01-01T10:00:00.123+00:00 host prog[1]: message   ISO 8601 (rsyslog's high-precision format)
    2020-03-23 06:47:42.801612-0700  host prog[1]: message  the same with a space for the T
    <34>1 2003-10-11T22:14:15.003Z host app 12 ID47 [sd] message    RFC 5424

The program part may be `prog[pid]:`, `prog:`, `prog(module)[pid]:` (as `su(pam_unix)`) or
`prog-123:` (as `rsyslogd-2177`). A line with none of these has no header: its message is the line.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

_PRI = r"(?:<(?P<pri>\d{1,3})>)?"
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_CLOCK = r"\d\d:\d\d:\d\d(?:\.\d+)?"
_BSD_TIME = (rf"(?:{_MONTH} +\d{{1,2}} (?:\d{{4}} )?{_CLOCK}"  # Feb  9 11:44:56, Nov 13 2015 13:40:01
             rf"|\d{{4}} {_MONTH} +\d{{1,2}} {_CLOCK})")  # 2015 Nov 13 13:40:01
_ISO_TIME = r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?"
# prog, prog[pid], prog(module)[pid] (the module stays in the name, as Wazuh keeps it), prog-123;
# then ':' and the message.
_PROGRAM = r"(?P<program>[^\s:\[(]+(?:\([^)\s]*\))?)(?:\[(?P<pid>[^\]\s]*)\])?:(?: |$)"

# One pattern for both: a BSD time and an ISO time start differently, so trying the BSD form and then
# the ISO one (as two patterns did) is the same as one alternation, at half the cost on a miss. The
# message is the rest of the line, sliced off after the match: capturing it took a third of the time.
_HEADER: Final = re.compile(rf"{_PRI}(?:(?P<bsd>{_BSD_TIME}) |(?P<iso>{_ISO_TIME}) +)(?P<host>\S+) {_PROGRAM}")
_RFC5424 = re.compile(
    rf"<(?P<pri>\d{{1,3}})>1 (?P<timestamp>{_ISO_TIME}|-) (?P<host>\S+) (?P<program>\S+) (?P<pid>\S+) "
    r"(?P<msgid>\S+) (?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<message>.*))?",
    re.DOTALL,
)


class SyslogHeader(NamedTuple):
    """The header's parts (None where the line has none) and the message that follows it.

    A named tuple, not a dataclass: one is made for every text line, and a frozen dataclass took
    several times as long to build."""

    message: str
    timestamp: str | None = None
    hostname: str | None = None
    program_name: str | None = None
    pid: str | None = None
    facility: int | None = None
    severity: int | None = None
    format: str = "none"

    def fields(self) -> dict[str, str | int]:
        """The header as decoded fields, under Wazuh's names; parts the line lacks are left out."""
        _, timestamp, hostname, program_name, pid, facility, severity, _ = self
        if facility is None and timestamp is not None and hostname is not None and program_name is not None:
            # The usual BSD header, as one dict display (a third of the time of the general case)
            if pid is None:
                return {"timestamp": timestamp, "hostname": hostname, "program_name": program_name}
            return {"timestamp": timestamp, "hostname": hostname, "program_name": program_name, "pid": pid}
        out: dict[str, str | int] = {}
        if timestamp is not None:
            out["timestamp"] = timestamp
        if hostname is not None:
            out["hostname"] = hostname
        if program_name is not None:
            out["program_name"] = program_name
        if pid is not None:
            out["pid"] = pid
        if facility is not None:
            out["facility"] = facility
        if severity is not None:
            out["severity"] = severity
        return out


_new: Final = tuple.__new__


def parse_header(line: str) -> SyslogHeader:
    """Split `line` into its syslog header and message; a line without a header is all message."""
    if line.startswith("<") and (match := _RFC5424.match(line)):
        return _rfc5424(match)
    match = _HEADER.match(line)
    if match is None:
        return _new(SyslogHeader, (line, None, None, None, None, None, None, "none"))
    pri, bsd, iso, host, program, pid = match.groups()
    facility = severity = None
    if pri is not None and int(pri) <= 191:
        facility, severity = divmod(int(pri), 8)
    # tuple.__new__ directly: the named tuple's own __new__ is a Python function taking twice as long.
    return _new(SyslogHeader, (line[match.end():], bsd or iso, host, program, pid or None, facility, severity,
                               "rfc3164" if bsd is not None else "iso8601"))


def _rfc5424(match: re.Match[str]) -> SyslogHeader:
    pri, timestamp, host, program, pid, _, _, message = match.groups()
    facility = severity = None
    if int(pri) <= 191:
        facility, severity = divmod(int(pri), 8)
    return SyslogHeader(message or "", _dash(timestamp), _dash(host), _dash(program), _dash(pid) or None, facility,
                        severity, "rfc5424")


def _dash(value: str | None) -> str | None:
    """RFC 5424 writes `-` for a part it does not have."""
    return None if value == "-" else value
