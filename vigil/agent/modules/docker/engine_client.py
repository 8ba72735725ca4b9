"""Connects to the Docker Engine the way the docker CLI does: config, then DOCKER_HOST, then the socket."""

from __future__ import annotations

import os
from typing import Any

import docker
from docker.tls import TLSConfig

from vigil.config import DockerConfig

DEFAULT_SOCKET = "unix:///var/run/docker.sock"


class _APIClient(docker.APIClient):  # type: ignore[misc]  # the docker SDK ships no type hints
    """requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace the CA given in code (psf/requests#3829);
    a CA configured for the engine, or verify: false, must win over the machine's environment."""

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and self.verify is not True:
            settings["verify"] = self.verify
        return settings


class _DockerClient(docker.DockerClient):  # type: ignore[misc]
    def __init__(self, **kwargs: Any) -> None:
        self.api = _APIClient(**kwargs)


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
    return _DockerClient(base_url=engine_url(config), tls=tls, timeout=timeout)
