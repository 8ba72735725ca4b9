"""A remote Docker Engine on tcp://127.0.0.1:PORT with mutual TLS, as a user would configure it.

The engine is a real dockerd serving both its private unix socket (the test drives docker
through it) and a TLS port (Vigil reads events and inspects containers through that only).
Certificates are made here with the openssl CLI: a CA, a server certificate for IP 127.0.0.1,
a client certificate, and a client certificate from a second CA that the engine must refuse.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .daemons import HOST_BUSYBOX, Dockerd, build_busybox_image, dockerd_path, free_port, is_static_elf
from .vigil_proc import VigilProcess, rule_is

IMAGE = "vigil-tls-test:1"
CONNECT_TIMEOUT_S = 10.0
_names = itertools.count()


# ---- certificates ------------------------------------------------------------------------------
def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    assert openssl is not None
    proc = subprocess.run([openssl, *args], capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()}")


def _new_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", str(path))


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    _new_key(key)
    _openssl("req", "-x509", "-new", "-key", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash")
    return cert, key


def issue(directory: Path, name: str, ca: tuple[Path, Path], *, server: bool) -> tuple[Path, Path]:
    """A leaf certificate signed by `ca`: for the server at IP 127.0.0.1, or for a client."""
    cert, key, csr = directory / f"{name}.pem", directory / f"{name}-key.pem", directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    usage = "serverAuth" if server else "clientAuth"
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid,issuer",
    ]
    if server:
        lines.append("subjectAltName=IP:127.0.0.1,DNS:localhost")
    ext.write_text("\n".join(lines) + "\n")
    _new_key(key)
    _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={'127.0.0.1' if server else name}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext))
    key.chmod(0o600)
    return cert, key


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: tuple[Path, Path]
    client: tuple[Path, Path]
    rogue_ca: Path
    rogue_client: tuple[Path, Path]  # signed by another CA that the engine does not trust


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("e2e: the openssl CLI is not installed (apt-get install openssl)")
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "ca")
    rogue_ca = make_ca(d, "rogue-ca")
    return Pki(
        ca=ca[0],
        server=issue(d, "server", ca, server=True),
        client=issue(d, "client", ca, server=False),
        rogue_ca=rogue_ca[0],
        rogue_client=issue(d, "rogue-client", rogue_ca, server=False),
    )


# ---- a dockerd that serves TLS on 127.0.0.1 ------------------------------------------------------
@dataclass(frozen=True)
class TlsEngine:
    dockerd: Dockerd
    url: str


@pytest.fixture(scope="module")
def tls_engine(pki: Pki) -> Iterator[TlsEngine]:
    if os.geteuid() != 0:
        pytest.skip("e2e: needs root to run dockerd")
    if dockerd_path() is None or not (os.access("/usr/bin/docker", os.X_OK) or shutil.which("docker")):
        pytest.skip("e2e: dockerd or the docker CLI is not installed (apt-get install docker.io)")
    if not is_static_elf(HOST_BUSYBOX):
        pytest.skip(f"e2e: {HOST_BUSYBOX} missing or not static (apt-get install busybox-static)")
    port = free_port()
    extra = ["--tlsverify", "--tlscacert", str(pki.ca), "--tlscert", str(pki.server[0]),
             "--tlskey", str(pki.server[1]), "-H", f"tcp://127.0.0.1:{port}"]
    with Dockerd(extra_args=extra) as d:
        build_busybox_image(d, IMAGE)  # through the unix socket
        yield TlsEngine(d, f"tcp://127.0.0.1:{port}")


def vigil_config(engine: TlsEngine, client: tuple[Path, Path], ca: Path) -> dict[str, Any]:
    return {
        "docker": {
            "host": engine.url,
            "tls": {"ca_cert": str(ca), "client_cert": str(client[0]), "client_key": str(client[1])},
            "reconnect_min_seconds": 0.2,
            "reconnect_max_seconds": 1.0,
        },
        "analysis": {"fold_window_seconds": 0},
    }


def docker_status(vigil: VigilProcess) -> dict[str, Any]:
    status: dict[str, Any] = vigil.health()["modules"]["docker"]
    return status


def wait_connected(vigil: VigilProcess, timeout: float = CONNECT_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not docker_status(vigil)["connected"]:
        if time.monotonic() > deadline:
            raise AssertionError(f"Vigil did not connect within {timeout} s: {docker_status(vigil)}\n{vigil.log()}")
        time.sleep(0.05)
    time.sleep(0.3)  # "connected" is set just before the event stream is requested


# ---- tests --------------------------------------------------------------------------------------
# requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace a session's CA (psf/requests#3829); many
# hosts set them (this one does, to the system bundle). The configured docker.tls.ca_cert must still win.
CA_BUNDLE_VARS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def without_ca_bundle_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in CA_BUNDLE_VARS:
        monkeypatch.delenv(var, raising=False)


def check_events_and_inspect_over_tls(engine: TlsEngine, pki: Pki, data_dir: Path,
                                      connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
    config = vigil_config(engine, pki.client, pki.ca)
    # DOCKER_HOST points at the unix socket; the configured tcp host must win.
    with VigilProcess(data_dir, engine.dockerd.host, config) as vigil:
        wait_connected(vigil, connect_timeout)
        assert docker_status(vigil)["engine"] == engine.url
        name = f"tls{next(_names)}"
        cid = engine.dockerd.cli("create", "--network", "none", "--name", name, IMAGE, "sleep", "1").stdout.strip()
        alert = vigil.wait_for(rule_is(87901, name), timeout=2.0)
        assert alert["rule"]["description"] == f"Docker: Container {name} created"
        assert alert["rule"]["level"] == 3
        assert alert["data"]["docker"]["Actor"]["ID"] == cid
        container = alert["data"]["container"]
        assert "inspect_error" not in container, container
        assert container["privileged"] is False
        assert docker_status(vigil)["inspect_errors"] == 0
        assert alert["id"] in {a["id"] for a in vigil.api_alerts(rule_id=87901)}


def test_events_and_inspect_over_tls(pki: Pki, tls_engine: TlsEngine, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    without_ca_bundle_env(monkeypatch)
    check_events_and_inspect_over_tls(tls_engine, pki, tmp_path / "vigil")


def test_configured_ca_wins_over_ca_bundle_env(pki: Pki, tls_engine: TlsEngine, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    without_ca_bundle_env(monkeypatch)
    # A readable bundle that does not hold our CA, as the system bundle does on most hosts.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.rogue_ca))
    check_events_and_inspect_over_tls(tls_engine, pki, tmp_path / "vigil", connect_timeout=3.0)


def test_client_cert_from_another_ca_is_refused(pki: Pki, tls_engine: TlsEngine, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    without_ca_bundle_env(monkeypatch)  # so that Vigil verifies the engine and the engine refuses Vigil
    handshake_errors_before = tls_engine.dockerd.log_path.read_text(errors="replace").count("TLS handshake error")
    config = vigil_config(tls_engine, pki.rogue_client, pki.ca)
    with VigilProcess(tmp_path / "vigil", tls_engine.dockerd.host, config) as vigil:
        time.sleep(1.6)  # four connection attempts: at 0, 0.2, 0.6 and 1.4 s (backoff 0.2 s doubling to 1 s)
        assert vigil.proc is not None and vigil.proc.poll() is None, vigil.log()
        health = vigil.health()
        assert health["status"] == "ok"
        status = health["modules"]["docker"]
        assert status["connected"] is False
        assert status["engine"] == tls_engine.url
        assert status["restarts"] == 0
        # The engine is up and serving: only Vigil's certificate is refused.
        tls_engine.dockerd.cli("create", "--network", "none", "--name", f"rogue{next(_names)}", IMAGE, "true")
        time.sleep(0.3)
        assert [a for a in vigil.file_alerts() if a["rule"]["id"] == "87901"] == []
        assert vigil.api_alerts(rule_id=87901) == []
        lines = [line for line in vigil.log().splitlines() if "Docker engine not reachable" in line]
        assert len(lines) == 1, vigil.log()
        assert tls_engine.url in lines[0]
    dockerd_log = tls_engine.dockerd.log_path.read_text(errors="replace")
    refusals = [line for line in dockerd_log.splitlines() if "TLS handshake error" in line]
    assert len(refusals) > handshake_errors_before + 1, "Vigil should have retried the handshake"
    assert "certificate signed by unknown authority" in refusals[-1], refusals[-1]
