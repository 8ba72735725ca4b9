"""Connects to the Docker Engine the way the docker CLI does: config, then DOCKER_HOST, then the socket."""

from __future__ import annotations

import os

import docker
from docker.tls import TLSConfig

from vigil.config import DockerConfig

DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def engine_url(config: DockerConfig) -> str:
    return config.host or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def open_client(config: DockerConfig) -> docker.DockerClient:
    """A client for the configured engine; TLS from the config, or from DOCKER_TLS_VERIFY/DOCKER_CERT_PATH."""
    timeout = int(max(1, config.api_timeout_seconds))
    if config.host is None and config.tls is None:
        env = dict(os.environ)
        env.setdefault("DOCKER_HOST", DEFAULT_SOCKET)
        return docker.from_env(timeout=timeout, environment=env)
    tls: TLSConfig | bool = False
    if config.tls is not None:
        cert = None
        if config.tls.client_cert and config.tls.client_key:
            cert = (str(config.tls.client_cert), str(config.tls.client_key))
        verify: bool | str = str(config.tls.ca_cert) if config.tls.ca_cert and config.tls.verify else config.tls.verify
        tls = TLSConfig(client_cert=cert, verify=verify)
    return docker.DockerClient(base_url=engine_url(config), tls=tls, timeout=timeout)
