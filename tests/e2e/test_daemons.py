"""The e2e helpers themselves: real dockerd, busybox image and registry behave as tests expect."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from .daemons import DockerCLIError, Dockerd, Registry, build_busybox_image, dockerd_path, process_alive


def test_dockerd_answers_ping_and_reports_vfs(dockerd: Dockerd) -> None:
    with contextlib.closing(dockerd.client()) as client:
        assert client.ping() is True
        info = client.info()
    assert info["Driver"] == "vfs"
    assert Path(info["DockerRootDir"]) == dockerd.dir / "data"
    assert dockerd.cli("version", "--format", "{{.Server.Version}}").stdout.strip()


def test_busybox_image_runs_echo(dockerd: Dockerd, busybox_image: str) -> None:
    out = dockerd.cli("run", "--rm", "--network", "none", busybox_image, "echo", "hi")
    assert out.stdout == "hi\n"


def test_busybox_image_has_shells_and_package_managers(dockerd: Dockerd, busybox_image: str) -> None:
    name = "vigil-helpers-exec"
    dockerd.cli("run", "-d", "--name", name, "--network", "none", busybox_image, "sleep", "300")
    try:
        assert dockerd.cli("exec", name, "sh", "-c", "echo x").stdout == "x\n"
        assert dockerd.cli("exec", name, "bash", "-i", "-c", "true").returncode == 0
        assert dockerd.cli("exec", name, "zsh", "-c", "echo z").stdout == "z\n"
        assert (
            dockerd.cli("exec", name, "apt-get", "install", "-y", "nmap")
            .stdout.strip()
            .endswith("apt-get install -y nmap")
        )
        for tool in ("apk", "pip", "npm", "yum", "dnf", "wget", "vi", "tar", "hostname", "id", "ps"):
            assert dockerd.cli("exec", name, "which", tool).returncode == 0, tool
        assert dockerd.cli("exec", name, "id", "-un").stdout == "root\n"
    finally:
        dockerd.cli("rm", "-f", name, check=False)


def test_sys_admin_host_pid_container_starts(dockerd: Dockerd, busybox_image: str) -> None:
    name = "vigil-helpers-sysadmin"
    dockerd.cli(
        "run", "-d", "--name", name, "--network", "none", "--cap-add", "SYS_ADMIN", "--pid", "host",
        busybox_image, "sleep", "300",
    )  # fmt: skip
    try:
        with contextlib.closing(dockerd.client()) as client:
            attrs = client.containers.get(name).attrs
        assert attrs["State"]["Running"] is True
        assert attrs["HostConfig"]["PidMode"] == "host"
        assert "SYS_ADMIN" in (attrs["HostConfig"]["CapAdd"] or [])
        # With the host's PID namespace the container sees this test process.
        assert dockerd.cli("exec", name, "test", "-d", f"/proc/{os.getpid()}", check=False).returncode == 0
    finally:
        dockerd.cli("rm", "-f", name, check=False)


def test_privileged_container_is_created_but_cannot_start_here(dockerd: Dockerd, busybox_image: str) -> None:
    name = "vigil-helpers-privileged"
    dockerd.cli("create", "--name", name, "--network", "none", "--privileged", busybox_image, "true")
    try:
        with pytest.raises(DockerCLIError):
            dockerd.cli("start", name)
    finally:
        dockerd.cli("rm", "-f", name, check=False)


def test_cli_error_carries_stderr(dockerd: Dockerd) -> None:
    with pytest.raises(DockerCLIError, match="No such container") as err:
        dockerd.cli("inspect", "--type", "container", "does-not-exist")
    assert err.value.proc.returncode != 0
    assert dockerd.cli("inspect", "does-not-exist", check=False).returncode != 0


def test_registry_push_and_pull(dockerd: Dockerd, busybox_image: str, registry: Registry) -> None:
    with urllib.request.urlopen(f"{registry.url}/v2/", timeout=5) as resp:
        assert resp.status == 200
    ref = f"{registry.address}/vigil-test:1"
    dockerd.cli("tag", busybox_image, ref)
    dockerd.cli("push", ref, timeout=120)
    with urllib.request.urlopen(f"{registry.url}/v2/_catalog", timeout=5) as resp:
        assert "vigil-test" in json.load(resp)["repositories"]
    dockerd.cli("rmi", ref)
    assert dockerd.cli("image", "inspect", ref, check=False).returncode != 0
    dockerd.cli("pull", ref, timeout=120)
    assert dockerd.cli("run", "--rm", "--network", "none", ref, "echo", "pulled").stdout == "pulled\n"
    dockerd.cli("rmi", ref)


def test_stop_and_start_keep_images_and_containers(fresh_dockerd: Dockerd) -> None:
    d = fresh_dockerd
    image_id = build_busybox_image(d, "vigil-restart:1")
    d.cli("create", "--name", "kept", "--network", "none", "vigil-restart:1", "true")
    old_pid = d.pid
    d.stop()
    assert d.pid is None
    assert not d.running
    d.stop()  # idempotent
    d.start()
    assert d.pid is not None
    assert d.pid != old_pid
    assert d.cli("image", "inspect", "--format", "{{.Id}}", "vigil-restart:1").stdout.strip() == image_id
    assert d.cli("inspect", "--format", "{{.Name}}", "kept").stdout.strip() == "/kept"
    assert d.cli("run", "--rm", "--network", "none", "vigil-restart:1", "echo", "again").stdout == "again\n"


def test_exit_removes_everything() -> None:
    if os.geteuid() != 0 or dockerd_path() is None:
        pytest.skip("e2e: needs root and dockerd")
    with Dockerd() as d:
        build_busybox_image(d, "vigil-gone:1")
        d.cli("run", "-d", "--name", "running", "--network", "none", "vigil-gone:1", "sleep", "300")
        pid = d.pid
        root = d.dir
    assert pid is not None
    assert not Path(f"/proc/{pid}").exists()
    assert not root.exists()
    with open("/proc/self/mountinfo") as f:
        assert str(root) not in f.read()


def test_remove_cleans_up_after_a_killed_dockerd() -> None:
    """After a SIGKILL, containerd-shim and the container outlive dockerd; remove() reaps them."""
    if os.geteuid() != 0 or dockerd_path() is None:
        pytest.skip("e2e: needs root and dockerd")
    with Dockerd() as d:
        build_busybox_image(d, "vigil-killed:1")
        out = d.cli("run", "-d", "--name", "orphan", "--network", "none", "vigil-killed:1", "sleep", "300")
        container_id = out.stdout.strip()
        assert d.pid is not None
        os.kill(d.pid, signal.SIGKILL)
        time.sleep(0.3)
    leftovers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ours = container_id in (entry / "cgroup").read_text() or str(d.dir) in (entry / "cmdline").read_text()
                if ours and process_alive(int(entry.name)):
                    leftovers.append(entry.name)
            except OSError:
                continue
    assert leftovers == []
    assert not d.dir.exists()
