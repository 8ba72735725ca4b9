"""Every Docker action a user can take, on a real dockerd, becomes the right alert within 2 s.

Each test does what a user would do with the docker CLI and reads alerts.json and GET /alerts,
as a user would.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import queue
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .daemons import Dockerd, Registry
from .vigil_proc import Alert, VigilProcess, rule_is

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


@pytest.fixture(scope="module")
def vigil(dockerd: Dockerd, busybox_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VigilProcess]:
    # Folding is off here so that repeating an action (stop twice) alerts each time; it has its own test.
    config = {"analysis": {"fold_window_seconds": 0}}
    with VigilProcess(tmp_path_factory.mktemp("vigil"), dockerd.host, config) as proc:
        yield proc


class Expect:
    """Runs docker commands and checks the alert they raise, in alerts.json and the API."""

    def __init__(self, vigil: VigilProcess, dockerd: Dockerd) -> None:
        self.vigil = vigil
        self.dockerd = dockerd

    def mark(self) -> int:
        return len(self.vigil.file_alerts())

    def alert(self, since: int, rule_id: int, level: int, description: str | Callable[[str], bool]) -> Alert:
        wanted = description if callable(description) else description.__eq__
        alert = self.vigil.wait_for(lambda a: rule_is(rule_id)(a) and wanted(a["rule"]["description"]),
                                    timeout=2.0, since=since)
        assert alert["rule"]["level"] == level
        api = self.vigil.api_alerts(rule_id=rule_id)
        assert alert["id"] in {a["id"] for a in api}, "alert missing from GET /alerts"
        return alert

    def docker(self, *args: str) -> str:
        return self.dockerd.cli(*args).stdout.strip()


@pytest.fixture
def expect(vigil: VigilProcess, dockerd: Dockerd) -> Expect:
    return Expect(vigil, dockerd)


def running(expect: Expect, image: str, *options: str, name: str | None = None) -> str:
    name = name or unique("c")
    expect.docker("run", "-d", "--network", "none", "--name", name, *options, image, "sleep", "300")
    return name


# ---- the seed's two examples -------------------------------------------------------------------
def test_container_created_matches_seed_format(expect: Expect, busybox_image: str) -> None:
    since = expect.mark()
    name = unique("created")
    cid = expect.docker("create", "--network", "none", "--name", name, busybox_image, "sleep", "1")
    alert = expect.alert(since, 87901, 3, f"Docker: Container {name} created")
    assert alert["data"]["docker"]["Action"] == "create"
    assert alert["data"]["docker"]["Actor"]["ID"] == cid
    assert alert["data"]["docker"]["Actor"]["Attributes"]["name"] == name
    assert alert["decoder"] == {"name": "json"}
    assert alert["location"] == "docker"
    assert set(alert["agent"]) >= {"id", "name"} and alert["manager"]["name"]
    assert {"pci_dss", "gdpr", "hipaa", "nist_800_53"} & set(alert["rule"]) or alert["rule"]["groups"]
    assert alert["rule"]["firedtimes"] == 1
    assert alert["data"]["container"]["privileged"] is False


def test_command_in_container(expect: Expect, busybox_image: str) -> None:
    name = running(expect, busybox_image)
    since = expect.mark()
    expect.docker("exec", name, "cat", "/etc/passwd")
    alert = expect.alert(since, 87907, 3, f"Docker: Command launched in container {name}")
    assert alert["data"]["docker"]["Action"] == "exec_start: cat /etc/passwd"
    assert alert["data"]["exec"]["program"] == "cat"


def test_start(expect: Expect, busybox_image: str) -> None:
    name = unique("start")
    expect.docker("create", "--network", "none", "--name", name, busybox_image, "sleep", "300")
    since = expect.mark()
    expect.docker("start", name)
    expect.alert(since, 87903, 3, f"Docker: Container {name} started")


# ---- shells and package managers ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "rule_id", "level"),
    [
        (["/bin/sh"], 87908, 5),
        (["sh", "-c", "echo hi"], 200110, 5),
        (["ash", "-c", "true"], 200110, 5),
        (["zsh", "-c", "true"], 200110, 5),
        (["busybox", "sh", "-c", "true"], 200110, 5),
        (["bash", "-i"], 200110, 5),
    ],
)
def test_shell_in_container(expect: Expect, busybox_image: str, argv: list[str], rule_id: int, level: int) -> None:
    name = running(expect, busybox_image)
    since = expect.mark()
    expect.docker("exec", name, *argv)
    prefixes = (f"Docker: Shell started in container {name}", f"Docker: Started shell session in container {name}")
    expect.alert(since, rule_id, level, lambda d: d.startswith(prefixes))


@pytest.mark.parametrize("argv", [["apk", "add", "curl"], ["apt-get", "install", "-y", "curl"], ["pip", "install", "x"],
                                  ["npm", "install", "left-pad"], ["sh", "-c", "yum install -y nc"]])
def test_package_manager_in_container(expect: Expect, busybox_image: str, argv: list[str]) -> None:
    name = running(expect, busybox_image)
    since = expect.mark()
    expect.docker("exec", name, *argv)
    expect.alert(since, 200111, 7, lambda d: d.startswith(f"Docker: New application installed in container {name}"))


def test_healthcheck_execs_are_counted_not_alerted(expect: Expect, vigil: VigilProcess, busybox_image: str) -> None:
    since = expect.mark()
    name = running(expect, busybox_image, "--health-cmd", "true", "--health-interval", "1s")
    expect.alert(since, 87903, 3, f"Docker: Container {name} started")
    deadline_alerts = vigil.wait_for(lambda a: a["rule"]["id"] == "87903" and name in a["rule"]["description"],
                                     since=since)
    assert deadline_alerts
    time.sleep(3.5)
    execs = [a for a in vigil.file_alerts()[since:] if a["rule"]["id"] in ("87907", "200110", "87908")
             and name in a["rule"]["description"]]
    assert execs == []
    suppressed = vigil.health()["suppressed"]
    assert suppressed.get("87907:healthcheck", 0) >= 2


# ---- dangerous containers ----------------------------------------------------------------------
def test_privileged_create(expect: Expect, busybox_image: str) -> None:
    since = expect.mark()
    name = unique("priv")
    expect.docker("create", "--privileged", "--network", "none", "--name", name, busybox_image)
    alert = expect.alert(since, 200100, 12, f"Docker: Privileged container {name} (create) from image {busybox_image}")
    assert alert["rule"]["mitre"]["id"] == ["T1611", "T1610"]
    assert "Privilege Escalation" in alert["rule"]["mitre"]["tactic"]


def test_docker_socket_mount(expect: Expect, dockerd: Dockerd, busybox_image: str) -> None:
    since = expect.mark()
    socket = dockerd.host.removeprefix("unix://")
    name = running(expect, busybox_image, "-v", f"{socket}:/var/run/docker.sock")
    for action in ("create", "start"):
        expect.alert(since, 200102, 12, lambda d, a=action: d.startswith(
            f"Docker: Container runtime socket mounted into container {name} ({a})"))


def test_sensitive_host_path_mount(expect: Expect, busybox_image: str) -> None:
    since = expect.mark()
    name = running(expect, busybox_image, "-v", "/etc:/host-etc:ro")
    alert = expect.alert(since, 200101, 10, lambda d: d.startswith(f"Docker: Sensitive host path mounted into "
                                                                      f"container {name} (create): /etc"))
    assert alert["data"]["container"]["bind_sources"] == ["/etc"]


def test_host_pid_namespace(expect: Expect, busybox_image: str) -> None:
    since = expect.mark()
    name = running(expect, busybox_image, "--pid", "host")
    expect.alert(since, 200103, 8, f"Docker: Container {name} (start) shares the host PID namespace")


def test_cap_add_sys_admin(expect: Expect, busybox_image: str) -> None:
    since = expect.mark()
    name = running(expect, busybox_image, "--cap-add", "SYS_ADMIN")
    expect.alert(since, 200107, 9, f"Docker: Dangerous capabilities added to container {name} (create): SYS_ADMIN")


def test_harmless_container_raises_no_posture_alert(expect: Expect, vigil: VigilProcess, busybox_image: str) -> None:
    since = expect.mark()
    name = running(expect, busybox_image, "--cap-add", "CHOWN", "-v", "vigilvol:/data")
    expect.alert(since, 87903, 3, f"Docker: Container {name} started")
    posture = [a for a in vigil.file_alerts()[since:] if a["rule"]["id"].startswith("2001")
               and name in a["rule"]["description"]]
    assert posture == []


# ---- container lifecycle -----------------------------------------------------------------------
def test_container_lifecycle(expect: Expect, busybox_image: str, tmp_path: Path) -> None:
    name = running(expect, busybox_image)
    steps: list[tuple[list[str], int, int, str]] = [
        (["pause", name], 87905, 3, f"Docker: Container {name} paused"),
        (["unpause", name], 87906, 3, f"Docker: Container {name} unpaused"),
        (["update", "--memory", "64m", "--memory-swap", "128m", name], 87925, 3,
         f"Docker: Configuration of container {name} updated"),
        (["top", name], 87926, 3, f"Docker: Processes of container {name} listed"),
        (["export", "-o", str(tmp_path / "fs.tar"), name], 87923, 5,
         f"Docker: Filesystem of container {name} exported"),
        (["commit", name, f"{name}-img:1"], 87917, 3, f"Docker: Image committed from container {name}"),
        (["restart", "-t", "0", name], 87909, 3, f"Docker: Container {name} restarted"),
        (["stop", "-t", "0", name], 87904, 3, f"Docker: Container {name} stopped"),
    ]
    for args, rule_id, level, description in steps:
        since = expect.mark()
        expect.docker(*args)
        expect.alert(since, rule_id, level, description)
    new_name = unique("renamed")
    since = expect.mark()
    expect.docker("rename", name, new_name)
    expect.alert(since, 87935, 3, f"Docker: Container renamed from /{name} to {new_name}")
    since = expect.mark()
    expect.docker("rm", new_name)
    expect.alert(since, 87902, 5, f"Docker: Container {new_name} destroyed")


def test_kill_and_die(expect: Expect, busybox_image: str) -> None:
    name = running(expect, busybox_image)
    since = expect.mark()
    expect.docker("kill", name)
    expect.alert(since, 87924, 7, f"Docker: Container {name} received the action: kill")
    expect.alert(since, 87924, 7, f"Docker: Container {name} received the action: die")


def test_copy_both_ways(expect: Expect, busybox_image: str, tmp_path: Path) -> None:
    name = running(expect, busybox_image)
    source = tmp_path / "payload.txt"
    source.write_text("hello")
    since = expect.mark()
    expect.docker("cp", str(source), f"{name}:/tmp/payload.txt")
    expect.alert(since, 87910, 3, f"Docker: File copied from the host into container {name}")
    since = expect.mark()
    expect.docker("cp", f"{name}:/etc/passwd", str(tmp_path / "passwd"))
    expect.alert(since, 87911, 3, f"Docker: File copied from container {name} to the host")


# ---- images ------------------------------------------------------------------------------------
def test_image_tag_untag_save_load_import_delete(expect: Expect, busybox_image: str, tmp_path: Path) -> None:
    tag = f"{unique('tagged')}:1"
    since = expect.mark()
    expect.docker("tag", busybox_image, tag)
    expect.alert(since, 87918, 3, f"Docker: Image {tag} tagged")
    archive = tmp_path / "img.tar"
    since = expect.mark()
    expect.docker("save", "-o", str(archive), tag)
    expect.alert(since, 87934, 3, "Docker: Image saved")
    since = expect.mark()
    expect.docker("rmi", tag)
    expect.alert(since, 87919, 3, lambda d: d.startswith("Docker: Image ") and d.endswith(" untagged"))
    since = expect.mark()
    expect.docker("load", "-i", str(archive))
    expect.alert(since, 87933, 3, "Docker: Image loaded")
    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        tar.add(str(archive), arcname="data.tar")
    since = expect.mark()
    image_id = expect.docker("import", str(rootfs))
    expect.alert(since, 87920, 3, "Docker: Image created from imported data")
    since = expect.mark()
    expect.docker("rmi", image_id)
    expect.alert(since, 87921, 7, lambda d: d.startswith("Docker: Image ") and d.endswith(" deleted"))


def test_image_updated_when_tag_moves(expect: Expect, busybox_image: str, tmp_path: Path) -> None:
    name = running(expect, busybox_image)
    expect.docker("exec", name, "touch", "/tmp/changed")
    other = expect.docker("commit", name)
    tag = f"{unique('moving')}:1"
    since = expect.mark()
    expect.docker("tag", busybox_image, tag)
    first = expect.alert(since, 87918, 3, f"Docker: Image {tag} tagged")
    since = expect.mark()
    expect.docker("tag", other, tag)
    alert = expect.alert(since, 200120, 6, lambda d: d.startswith(f"Docker: Image {tag} updated"))
    assert alert["data"]["image"]["previous_id"] == first["data"]["image"]["id"]
    assert alert["data"]["image"]["id"] == other


def test_push_and_pull(expect: Expect, registry: Registry, busybox_image: str) -> None:
    ref = f"{registry.address}/{unique('pushed')}:1"
    expect.docker("tag", busybox_image, ref)
    since = expect.mark()
    expect.docker("push", ref)
    repo = ref.rsplit(":", 1)[0]
    expect.alert(since, 87958, 3, f"Docker: Image {repo} pushed")
    expect.docker("rmi", ref)
    since = expect.mark()
    expect.docker("pull", ref)
    expect.alert(since, 87932, 3, f"Docker: Image or repository {repo} pulled")


# ---- volumes and networks ----------------------------------------------------------------------
def test_volume_lifecycle(expect: Expect, busybox_image: str) -> None:
    volume = unique("vol")
    since = expect.mark()
    expect.docker("volume", "create", volume)
    expect.alert(since, 87913, 3, f"Docker: Volume {volume} created with driver local")
    since = expect.mark()
    expect.docker("run", "--rm", "--network", "none", "-v", f"{volume}:/data", busybox_image, "true")
    expect.alert(since, 87915, 3, f"Docker: Volume {volume} mounted on /data")
    expect.alert(since, 87916, 5, f"Docker: Volume {volume} unmounted (driver local)")
    since = expect.mark()
    expect.docker("volume", "rm", volume)
    expect.alert(since, 87914, 7, f"Docker: Volume {volume} destroyed (driver local)")


def test_network_lifecycle(expect: Expect, busybox_image: str) -> None:
    network = unique("net")
    since = expect.mark()
    expect.docker("network", "create", network)
    expect.alert(since, 87930, 3, f"Docker: Network {network} created")
    since = expect.mark()
    name = unique("netc")
    expect.docker("run", "-d", "--network", network, "--name", name, busybox_image, "sleep", "300")
    expect.alert(since, 87928, 3, f"Docker: Network {network} connected")
    since = expect.mark()
    expect.docker("network", "disconnect", "-f", network, name)
    expect.alert(since, 87929, 4, f"Docker: Network {network} disconnected")
    since = expect.mark()
    expect.docker("network", "rm", network)
    expect.alert(since, 87931, 5, f"Docker: Network {network} deleted")


def test_repeats_fold_into_one_alert_with_firedtimes(dockerd: Dockerd, busybox_image: str, tmp_path: Path) -> None:
    """With folding on, five identical execs give one alert now and one summary when the window ends."""
    config = {"analysis": {"fold_window_seconds": 2}}
    with VigilProcess(tmp_path / "vigil", dockerd.host, config) as folding:
        name = unique("fold")
        dockerd.cli("run", "-d", "--network", "none", "--name", name, busybox_image, "sleep", "300")
        folding.wait_for(rule_is(87903, name), timeout=2)
        since = len(folding.file_alerts())
        for _ in range(5):
            dockerd.cli("exec", name, "cat", "/etc/hostname")
        first = folding.wait_for(rule_is(87907, name), since=since)
        assert first["rule"]["firedtimes"] == 1
        summary = folding.wait_for(lambda a: rule_is(87907, name)(a) and "vigil" in a, timeout=5, since=since)
        assert summary["rule"]["firedtimes"] == 5
        assert summary["vigil"]["fold"]["first_alert"] == first["id"]
        assert summary["vigil"]["fold"]["occurrences"] == 5
        execs = [a for a in folding.file_alerts()[since:] if rule_is(87907, name)(a)]
        assert len(execs) == 2
        assert folding.health()["alerts_folded"] == 4


# ---- the CLI against a running Vigil -----------------------------------------------------------
def _vigil_cli(vigil: VigilProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vigil", *args, "--data-dir", str(vigil.data_dir)],
                          capture_output=True, text=True, timeout=30)


def test_cli_alerts_status_and_follow(expect: Expect, vigil: VigilProcess, busybox_image: str) -> None:
    follower = subprocess.Popen(
        [sys.executable, "-m", "vigil", "alerts", "--follow", "--json", "--limit", "1", "--rule", "87901",
         "--data-dir", str(vigil.data_dir)],
        stdout=subprocess.PIPE, text=True,
    )
    name = unique("followed")
    try:
        assert follower.stdout is not None
        time.sleep(1.5)  # the follower is up and has printed what was there
        since = expect.mark()
        expect.docker("create", "--network", "none", "--name", name, busybox_image)
        expect.alert(since, 87901, 3, f"Docker: Container {name} created")
        # A thread reads the follower's lines (select() on a buffered pipe can miss buffered lines).
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True).start()  # type: ignore[union-attr]
        descriptions = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and f"Docker: Container {name} created" not in descriptions:
            with contextlib.suppress(queue.Empty):
                descriptions.append(json.loads(lines.get(timeout=0.2))["rule"]["description"])
        assert f"Docker: Container {name} created" in descriptions
    finally:
        follower.terminate()
        follower.wait(5)
    table = _vigil_cli(vigil, "alerts", "--level", "3", "--limit", "5")
    assert table.returncode == 0, table.stderr
    assert f"Docker: Container {name} created" in table.stdout
    assert "level" in table.stdout and "description" in table.stdout
    status = _vigil_cli(vigil, "status")
    assert status.returncode == 0, status.stderr
    assert "module docker: connected" in status.stdout
    assert "Vigil 0.1.0 running" in status.stdout
