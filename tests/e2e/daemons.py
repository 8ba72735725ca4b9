"""Start and stop real daemons for end-to-end tests (DESIGN.md section 5).

Everything here runs on loopback or on a private unix socket in a short temp dir, and
every process started here is stopped by PID. Nothing runs at import.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import docker
import docker.errors
import requests

HOST_BUSYBOX = Path("/bin/busybox")
DOCKERD_START_TIMEOUT_S = 20.0
DOCKERD_STOP_TIMEOUT_S = 15.0
REGISTRY_START_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 30

# Applets the test image must have (busybox provides them; we link every applet it has).
REQUIRED_APPLETS = (
    "sh", "ash", "ls", "cat", "echo", "sleep", "true", "false", "id", "ps", "top", "env",
    "touch", "mkdir", "rm", "vi", "wget", "tar", "hostname",
)  # fmt: skip
# Busybox has no bash/zsh applet ("applet not found"), so these are wrappers around sh.
SHELL_WRAPPERS = ("bash", "zsh")
# Package managers as tiny scripts, so `docker exec C apt-get install x` succeeds.
FAKE_PACKAGE_MANAGERS = ("apt", "apt-get", "apk", "pip", "pip3", "npm", "yum", "dnf")


class DaemonError(RuntimeError):
    """A test daemon could not be started, answered wrongly, or a CLI call failed."""


class DockerCLIError(DaemonError):
    """`docker ...` exited non-zero; carries the completed process."""

    def __init__(self, args: Sequence[str], proc: subprocess.CompletedProcess[str]) -> None:
        self.proc = proc
        super().__init__(f"docker {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def find_binary(name: str, *fallbacks: str) -> str | None:
    """`name` on PATH, else the first executable fallback path (e.g. /usr/sbin/dockerd)."""
    found = shutil.which(name)
    if found is not None:
        return found
    return next((p for p in fallbacks if os.access(p, os.X_OK)), None)


def dockerd_path() -> str | None:
    return find_binary("dockerd", "/usr/sbin/dockerd", "/usr/bin/dockerd")


def registry_path() -> str | None:
    return find_binary("docker-registry", "/usr/bin/docker-registry")


def docker_cli_path() -> str:
    """The docker CLI: Debian's /usr/bin/docker (same version as dockerd), else PATH."""
    if os.access("/usr/bin/docker", os.X_OK):
        return "/usr/bin/docker"
    found = shutil.which("docker")
    if found is None:
        raise DaemonError("docker CLI not found (apt-get install docker.io)")
    return found


def is_static_elf(path: Path) -> bool:
    """True when `path` is an ELF executable without a program interpreter (statically linked)."""
    try:
        with path.open("rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
                return False
            endian = "<" if head[5] == 1 else ">"
            phoff = struct.unpack_from(endian + "Q", head, 0x20)[0]
            phentsize, phnum = struct.unpack_from(endian + "HH", head, 0x36)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    pt_interp = 3
    return all(struct.unpack_from(endian + "I", table, i * phentsize)[0] != pt_interp for i in range(phnum))


def process_alive(pid: int) -> bool:
    """Running (a zombie has exited and holds nothing but its process-table entry)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL. Safe if it already exited."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=5)


def _mount_points_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first (from /proc/self/mountinfo)."""
    prefix = str(root)
    found: list[str] = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 5:
                continue
            # Octal escapes: \040 space, \011 tab, \012 newline, \134 backslash.
            point = fields[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def _pids_matching(cmdline_part: str | None, cgroup_ids: Sequence[str]) -> list[int]:
    """PIDs of containerd/dockerd processes whose cmdline contains `cmdline_part`, and of any
    process whose cgroup names one of `cgroup_ids` (container ids)."""
    me = os.getpid()
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if cmdline_part:
                comm = (entry / "comm").read_text().strip()
                if comm.startswith("containerd") or comm == "dockerd":
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                    if cmdline_part.encode() in cmdline:
                        pids.append(int(entry.name))
                        continue
            if cgroup_ids:
                cgroup = (entry / "cgroup").read_text()
                if any(c in cgroup for c in cgroup_ids):
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


class Dockerd:
    """A private Docker Engine on a unix socket in a short temp dir (vfs, no networking).

    Use as a context manager; `stop()` and `start()` restart it on the same data root, so
    images and containers survive (for tests of a daemon restart).
    """

    def __init__(self, extra_args: Sequence[str] = (), start_timeout: float = DOCKERD_START_TIMEOUT_S) -> None:
        dockerd = dockerd_path()
        if dockerd is None:
            raise DaemonError("dockerd not found (apt-get install docker.io)")
        self._binary = dockerd
        # Short path: unix socket paths are limited to 108 bytes, and containerd puts its
        # own sockets below the exec root.
        self.dir = Path(tempfile.mkdtemp(prefix="vd", dir="/tmp"))
        self.log_path = self.dir / "dockerd.log"
        self.socket_path = self.dir / "docker.sock"
        self._extra_args = tuple(extra_args)
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._removed = False
        # Hermetic: no /etc/docker/daemon.json and no ~/.docker/config.json (credential helpers).
        (self.dir / "daemon.json").write_text("{}\n")
        (self.dir / "cli").mkdir()
        (self.dir / "cli" / "config.json").write_text("{}\n")

    # -- properties -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The DOCKER_HOST URL of this daemon, `unix:///tmp/vd.../docker.sock`."""
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        """PID of the running dockerd, or None when stopped."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    def env(self) -> dict[str, str]:
        """An environment for the docker CLI that talks to this daemon only."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_API_VERSION"}
        }
        env["DOCKER_HOST"] = self.host
        env["DOCKER_CONFIG"] = str(self.dir / "cli")
        return env

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start dockerd (again) on this instance's data root; return once /_ping answers."""
        if self._removed:
            raise DaemonError(f"{self.dir} was removed; make a new Dockerd")
        if self.running:
            return
        d = self.dir
        cmd = [
            self._binary,
            "--config-file", str(d / "daemon.json"),
            "--data-root", str(d / "data"),
            "--exec-root", str(d / "exec"),
            "--pidfile", str(d / "pid"),
            "--storage-driver=vfs",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--host", self.host,
            *self._extra_args,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            log.write(f"--- vigil tests: starting {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in pytest must not hit it before finalizers run
            )
        atexit.register(self.remove)  # a crashed test script must not leave a daemon behind
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._start_timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise DaemonError(
                    f"dockerd exited with code {code} during start; last lines of {self.log_path}:\n"
                    + log_tail(self.log_path)
                )
            if self.socket_path.exists():
                try:
                    with contextlib.closing(docker.DockerClient(base_url=self.host, timeout=2)) as client:
                        if client.ping():
                            return
                except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
                    last_error = str(exc)
            time.sleep(0.05)
        self.stop()
        raise DaemonError(
            f"dockerd did not answer /_ping on {self.host} within {self._start_timeout:.0f} s "
            f"({last_error}); last lines of {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """SIGTERM dockerd, wait up to 15 s, then SIGKILL; reap anything it left. Idempotent."""
        if self._proc is not None:
            _wait_process(self._proc, DOCKERD_STOP_TIMEOUT_S)
            self._proc = None
        self._reap_leftovers()

    def _reap_leftovers(self) -> None:
        """Kill containers, shims and containerd still running for this daemon (after a SIGKILL)."""
        containers_dir = self.dir / "data" / "containers"
        ids = [p.name for p in containers_dir.iterdir()] if containers_dir.is_dir() else []
        # Container processes first (found by their cgroup), then shims/containerd (by our dir).
        killed: list[int] = []
        for pids in (_pids_matching(None, ids), _pids_matching(f"{self.dir}/", ())):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(process_alive(pid) for pid in killed):
            time.sleep(0.05)

    def kill_all_containers(self) -> None:
        """SIGKILL every running container (a fast teardown: dockerd's graceful stop waits 10 s
        for each container that ignores SIGTERM, as busybox `sleep` does as PID 1)."""
        if not self.running:
            return
        errors = (docker.errors.DockerException, requests.RequestException, OSError)
        with contextlib.suppress(*errors), contextlib.closing(self.client(timeout=10)) as client:
            for container in client.containers.list():
                with contextlib.suppress(*errors):
                    container.kill()

    def remove(self) -> None:
        """Kill containers, stop, unmount whatever is left below the temp dir, and delete it.

        Idempotent; also runs at interpreter exit for a daemon that was never removed.
        """
        if self._removed:
            return
        self.kill_all_containers()
        self.stop()
        for point in _mount_points_under(self.dir):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        self._removed = True
        atexit.unregister(self.remove)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    # -- clients -----------------------------------------------------------------------------

    def client(self, timeout: int = 60) -> docker.DockerClient:
        """A docker SDK client for this daemon (API version negotiated). Close it when done."""
        return docker.DockerClient(base_url=self.host, timeout=timeout)

    def cli(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run `docker ARGS` against this daemon; text output captured.

        Raises DockerCLIError (with stderr) on a non-zero exit when `check`.
        """
        proc = subprocess.run(
            [docker_cli_path(), *args],
            env=self.env(),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise DockerCLIError(args, proc)
        return proc

    def __repr__(self) -> str:
        return f"Dockerd(host={self.host!r}, pid={self.pid})"


def build_busybox_image(d: Dockerd, tag: str = "vigil-test:1") -> str:
    """Import a tiny image from the host's static busybox; return its id (`sha256:...`).

    Every busybox applet is linked in /bin; /bin/bash and /bin/zsh run busybox sh;
    apt, apt-get, apk, pip, pip3, npm, yum and dnf are scripts that echo their arguments.
    """
    if not is_static_elf(HOST_BUSYBOX):
        raise DaemonError(f"{HOST_BUSYBOX} missing or not static (apt-get install busybox-static)")
    work = Path(tempfile.mkdtemp(prefix="vimg", dir="/tmp"))
    try:
        root = work / "root"
        _make_busybox_rootfs(root)
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "--owner=0", "--group=0", "-C", str(root), "-c", "."],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert tar.stdout is not None
        try:
            imported = subprocess.run(
                [docker_cli_path(), "import", "-c", 'CMD ["/bin/sh"]', "-", tag],
                env=d.env(),
                stdin=tar.stdout,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            tar.stdout.close()
            tar_err = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
            tar.wait(timeout=30)
        if tar.returncode != 0:
            raise DaemonError(f"tar of {root} failed (exit {tar.returncode}): {tar_err.strip()}")
        if imported.returncode != 0:
            raise DockerCLIError(["import", tag], imported)
        return imported.stdout.strip()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _make_busybox_rootfs(root: Path) -> None:
    bin_dir = root / "bin"
    for sub in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "var/tmp", "proc", "sys", "dev"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "var" / "tmp").chmod(0o1777)
    shutil.copy2(HOST_BUSYBOX, bin_dir / "busybox")
    listed = subprocess.run([str(HOST_BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    missing = sorted(set(REQUIRED_APPLETS) - set(listed))
    if missing:
        raise DaemonError(f"{HOST_BUSYBOX} lacks applets {missing}")
    for applet in listed:
        if applet != "busybox" and "/" not in applet:
            (bin_dir / applet).symlink_to("busybox")
    (root / "usr" / "bin" / "env").symlink_to("/bin/busybox")  # for `#!/usr/bin/env sh` scripts
    scripts = {name: '#!/bin/sh\nexec /bin/sh "$@"\n' for name in SHELL_WRAPPERS}
    scripts |= {name: '#!/bin/sh\necho "$0 $@"\n' for name in FAKE_PACKAGE_MANAGERS}
    for name, body in scripts.items():
        path = bin_dir / name
        path.unlink(missing_ok=True)
        path.write_text(body)
        path.chmod(0o755)
    etc = root / "etc"
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (etc / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (etc / "hostname").write_text("vigil-test\n")
    (etc / "os-release").write_text('ID=busybox\nNAME="BusyBox (vigil test image)"\n')


class Registry:
    """Docker's distribution registry (`docker-registry serve`) on 127.0.0.1, no auth.

    dockerd treats 127.0.0.0/8 registries as insecure, so plain-http push/pull works.
    """

    def __init__(self, port: int | None = None) -> None:
        binary = registry_path()
        if binary is None:
            raise DaemonError("docker-registry not found (apt-get install docker-registry)")
        self._binary = binary
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="vreg", dir="/tmp"))
        self.log_path = self.dir / "registry.log"
        self.config_path = self.dir / "config.yml"
        self._proc: subprocess.Popen[bytes] | None = None
        (self.dir / "storage").mkdir()
        self.config_path.write_text(
            "version: 0.1\n"
            "log:\n"
            "  level: info\n"
            "storage:\n"
            "  filesystem:\n"
            f"    rootdirectory: {self.dir / 'storage'}\n"
            "  delete:\n"
            "    enabled: true\n"
            "http:\n"
            f"  addr: 127.0.0.1:{self.port}\n"
        )

    @property
    def address(self) -> str:
        """`127.0.0.1:PORT`, the prefix for image references (`ADDRESS/name:tag`)."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def pid(self) -> int | None:
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    def start(self) -> None:
        if self.pid is not None:
            return
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [self._binary, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + REGISTRY_START_TIMEOUT_S
        last_error = "no answer"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise DaemonError(
                    f"docker-registry exited with code {code}; last lines of {self.log_path}:\n"
                    + log_tail(self.log_path)
                )
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=1) as resp:
                    if resp.status == 200:
                        return
                    last_error = f"HTTP {resp.status}"
            except (urllib.error.URLError, OSError) as exc:
                last_error = str(exc)
            time.sleep(0.05)
        self.stop()
        raise DaemonError(
            f"docker-registry did not answer {self.url}/v2/ within {REGISTRY_START_TIMEOUT_S:.0f} s "
            f"({last_error}); last lines of {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """Stop the registry by PID (SIGTERM, then SIGKILL after 10 s). Idempotent."""
        if self._proc is not None:
            _wait_process(self._proc, 10)
            self._proc = None
        atexit.unregister(self.stop)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"Registry(address={self.address!r}, pid={self.pid})"
