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
from dataclasses import dataclass

_PRI = r"(?:<(?P<pri>\d{1,3})>)?"
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_CLOCK = r"\d\d:\d\d:\d\d(?:\.\d+)?"
_BSD_TIME = (rf"(?:\d{{4}} {_MONTH} +\d{{1,2}} {_CLOCK}"  # 2015 Nov 13 13:40:01
             rf"|{_MONTH} +\d{{1,2}} \d{{4}} {_CLOCK}"  # Nov 13 2015 13:40:01
             rf"|{_MONTH} +\d{{1,2}} {_CLOCK})")  # Feb  9 11:44:56
_ISO_TIME = r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?"
# prog, prog[pid], prog(module)[pid] (the module stays in the name, as Wazuh keeps it), prog-123;
# then ':' and the message.
_PROGRAM = r"(?P<program>[^\s:\[(]+(?:\([^)\s]*\))?)(?:\[(?P<pid>[^\]\s]*)\])?:(?: |$)"

_BSD = re.compile(rf"{_PRI}(?P<timestamp>{_BSD_TIME}) (?P<host>\S+) {_PROGRAM}(?P<message>.*)", re.DOTALL)
_ISO = re.compile(rf"{_PRI}(?P<timestamp>{_ISO_TIME}) +(?P<host>\S+) {_PROGRAM}(?P<message>.*)", re.DOTALL)
_RFC5424 = re.compile(
    rf"<(?P<pri>\d{{1,3}})>1 (?P<timestamp>{_ISO_TIME}|-) (?P<host>\S+) (?P<program>\S+) (?P<pid>\S+) "
    r"(?P<msgid>\S+) (?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<message>.*))?",
    re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class SyslogHeader:
    """The header's parts (None where the line has none) and the message that follows it."""

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
        out: dict[str, str | int] = {}
        for name in ("timestamp", "hostname", "program_name", "pid", "facility", "severity"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def parse_header(line: str) -> SyslogHeader:
    """Split `line` into its syslog header and message; a line without a header is all message."""
    if line.startswith("<") and (match := _RFC5424.match(line)):
        return _header(match, "rfc5424", none_if_dash=True)
    if match := _BSD.match(line):
        return _header(match, "rfc3164")
    if match := _ISO.match(line):
        return _header(match, "iso8601")
    return SyslogHeader(message=line)


def _header(match: re.Match[str], kind: str, none_if_dash: bool = False) -> SyslogHeader:
    def part(name: str) -> str | None:
        value = match.group(name)
        return None if value is None or (none_if_dash and value == "-") else value

    facility = severity = None
    if (pri := match.group("pri")) is not None and int(pri) <= 191:
        facility, severity = divmod(int(pri), 8)
    return SyslogHeader(
        message=match.group("message") or "", timestamp=part("timestamp"), hostname=part("host"),
        program_name=part("program"), pid=part("pid") or None, facility=facility, severity=severity, format=kind,
    )
