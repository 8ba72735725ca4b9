"""Fixtures that start real daemons (DESIGN.md section 5); every test here is marked `e2e`.

Session-scoped daemons are shared by all e2e tests and stopped at the end of the session.
Tests that restart or break a daemon use `fresh_dockerd` instead of `dockerd`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .daemons import (
    HOST_BUSYBOX,
    Dockerd,
    Registry,
    build_busybox_image,
    dockerd_path,
    is_static_elf,
    registry_path,
)

E2E_DIR = Path(__file__).resolve().parent
TEST_IMAGE = "vigil-test:1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: end-to-end tests against real daemons started on this machine")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item of the session, not only ours: filter by path.
    for item in items:
        if item.path.resolve().is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)


def _require_dockerd() -> None:
    if os.geteuid() != 0:
        pytest.skip("e2e: needs root to run dockerd (run scripts/bootstrap.sh --with-test-daemons as root)")
    if dockerd_path() is None:
        pytest.skip("e2e: dockerd is not installed (apt-get install docker.io)")
    if not (os.access("/usr/bin/docker", os.X_OK) or shutil.which("docker")):
        pytest.skip("e2e: docker CLI is not installed (apt-get install docker.io)")


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    """A private dockerd for the session (vfs, no bridge: run containers with `--network none`)."""
    _require_dockerd()
    with Dockerd() as d:
        yield d


@pytest.fixture
def fresh_dockerd() -> Iterator[Dockerd]:
    """A private dockerd for one test, free to be stopped, restarted or broken."""
    _require_dockerd()
    with Dockerd() as d:
        yield d


@pytest.fixture(scope="session")
def busybox_image(dockerd: Dockerd) -> str:
    """Tag of the busybox test image (`vigil-test:1`) imported into the session dockerd."""
    if not is_static_elf(HOST_BUSYBOX):
        pytest.skip(f"e2e: {HOST_BUSYBOX} missing or not static (apt-get install busybox-static)")
    build_busybox_image(dockerd, TEST_IMAGE)
    return TEST_IMAGE


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """A plain-http, no-auth docker-registry on 127.0.0.1:PORT for the session."""
    if registry_path() is None:
        pytest.skip("e2e: docker-registry is not installed (apt-get install docker-registry)")
    with Registry() as r:
        yield r
