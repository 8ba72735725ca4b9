"""The shipped rules for package managers and user management: a firing line and a near miss for each."""

from __future__ import annotations

import time

import pytest

from vigil.event import AgentRef, Event

from .support import analyzer

H = "Mar  1 10:00:00 node-1 "

EXAMPLES = [
    # dpkg.log: the seed's "a new application is installed on the Docker host"
    ("2026-03-01 10:00:00 install nmap:amd64 <none> 7.93+dfsg1-1", "2902",
     "New package installed on the host: nmap 7.93+dfsg1-1 (dpkg)"),
    ("2026-03-01 10:00:01 status installed nmap:amd64 7.93+dfsg1-1", None, None),
    ("2026-03-01 10:00:02 remove nmap:amd64 7.93+dfsg1-1 <none>", "2903", None),
    ("2026-03-01 10:00:03 purge nmap:amd64 7.93+dfsg1-1 <none>", "2903", None),
    ("2026-03-01 10:00:04 upgrade libc6:amd64 2.36-9 2.36-9+deb12u1", "200300",
     "Package upgraded on the host: libc6 2.36-9 -> 2.36-9+deb12u1 (dpkg)"),
    ("2026-03-01 10:00:05 configure nmap:amd64 7.93+dfsg1-1 <none>", None, None),
    # apt history.log
    ("Commandline: apt install nmap", "200302", "apt run on the host: apt install nmap"),
    ("Install: nmap:amd64 (7.93+dfsg1-1)", None, None),
    # yum.log, dnf.rpm.log, yum through syslog
    ("May 02 10:11:12 Installed: nmap-7.92-1.x86_64", "2932", None),
    ("2026-03-01T10:11:12+0000 SUBDEBUG Installed: nmap-3:7.92-1.el9.x86_64", "2932", None),
    ("2026-03-01T10:11:12+0000 SUBDEBUG Upgrade: curl-7.76.1-26.el9.x86_64", "2933", None),
    ("2026-03-01T10:11:12+0000 SUBDEBUG Upgraded: curl-7.76.1-23.el9.x86_64", None, None),
    (H + "yum[33]: Erased: nmap", "2934", None),
    # shadow utilities
    (H + "useradd[7]: new user: name=bob, UID=1001, GID=1001, home=/home/bob, shell=/bin/bash, from=/dev/pts/0",
     "5902", "New user added to the system: bob (UID 1001, shell /bin/bash)"),
    (H + "useradd[7]: failed adding user 'bob', data deleted", None, None),
    (H + "groupadd[7]: new group: name=dev, GID=1002", "5901", None),
    (H + "usermod[7]: change user 'bob' shell", "5904", None),
    (H + "usermod[7]: add 'bob' to group 'dev'", "5904", None),
    (H + "usermod[7]: add 'bob' to group 'docker'", "200310", None),
    (H + "gpasswd[7]: user bob added by root to group sudo", "200310", None),
    (H + "userdel[7]: delete user 'bob'", "5903", None),
    (H + "passwd[7]: pam_unix(passwd:chauthtok): password changed for bob", "200311", None),
]


def text_event(line: str, when: float) -> Event:
    return Event(module="logs", location="/var/log/dpkg.log", timestamp=when, data={}, decoder="syslog", raw=line,
                 agent=AgentRef("001", "node-1"))


def example_events() -> list[Event]:
    now = time.time()
    return [text_event(line, now + i) for i, (line, *_) in enumerate(EXAMPLES)]


@pytest.mark.parametrize(("line", "rule", "description"), EXAMPLES)
def test_each_rule_fires_on_its_line_and_not_on_its_near_miss(line: str, rule: str | None,
                                                              description: str | None) -> None:
    alert = analyzer().analyse(text_event(line, time.time())).alert
    assert (alert["rule"]["id"] if alert else None) == rule
    if description is not None:
        assert alert is not None and alert["rule"]["description"] == description
