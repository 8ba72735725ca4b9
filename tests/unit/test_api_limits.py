"""Request limits: body size (announced and chunked) and the per-address rate, on a real uvicorn where it matters."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx

from vigil.api.limits import Buckets

from .api_support import Clock, bearer, client, live_server, make_app

LIMIT = 4096


def test_a_body_within_the_limit_is_served(tmp_path: Path) -> None:
    app, _, key = make_app(tmp_path, max_body_bytes=LIMIT)
    body = {"op": "ping", "args": {"pad": "x" * (LIMIT - 100)}}
    assert client(app, key).post("/agents/001/commands", json=body).json() == {"pong": True}


def test_a_declared_large_body_is_413_json(tmp_path: Path) -> None:
    app, backend, key = make_app(tmp_path, max_body_bytes=LIMIT)
    response = client(app, key).post("/agents/001/commands", content=b"{" + b" " * LIMIT + b"}",
                                     headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {"error": f"the request body is larger than the limit of {LIMIT} bytes",
                               "max_bytes": LIMIT}
    assert backend.commands == []


def test_a_large_login_is_413_before_any_password_check(tmp_path: Path) -> None:
    app, _, _ = make_app(tmp_path, max_body_bytes=LIMIT)
    response = client(app).post("/auth/login", json={"username": "a", "password": "p" * LIMIT})
    assert response.status_code == 413


def test_a_chunked_body_without_length_is_cut_at_the_limit(tmp_path: Path) -> None:
    app, backend, key = make_app(tmp_path, max_body_bytes=LIMIT)

    def chunks() -> Iterator[bytes]:
        yield b'{"op": "ping", "args": {"pad": "'
        for _ in range(8):
            yield b"x" * 1024
        yield b'"}}'

    with live_server(app) as url:
        response = httpx.post(f"{url}/agents/001/commands", content=chunks(),
                              headers={**bearer(key), "content-type": "application/json"}, timeout=10)
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
        assert response.status_code == 413
        assert "limit of 4096 bytes" in response.json()["error"]
        # The server goes on serving.
        assert httpx.get(f"{url}/health", headers=bearer(key), timeout=5).status_code == 200
    assert backend.commands == []


def test_a_chunked_body_within_the_limit_is_served(tmp_path: Path) -> None:
    app, _, key = make_app(tmp_path, max_body_bytes=LIMIT)
    with live_server(app) as url:
        response = httpx.post(f"{url}/agents/001/commands", content=iter([b'{"op": ', b'"ping"}']),
                              headers={**bearer(key), "content-type": "application/json"}, timeout=10)
    assert response.json() == {"pong": True}


def test_a_client_leaving_mid_body_does_not_hurt_the_server(tmp_path: Path) -> None:
    app, backend, key = make_app(tmp_path)
    with live_server(app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"POST /agents/001/commands HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                         b"Authorization: Bearer " + key.encode() + b"\r\n\r\n{")
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(4096) == b"", "no answer to half a request"
        assert httpx.get(f"{url}/health", headers=bearer(key), timeout=5).status_code == 200
    assert backend.commands == []


def test_over_the_rate_is_429_with_retry_after(tmp_path: Path) -> None:
    app, _, key = make_app(tmp_path, rate_per_second=0.5, rate_burst=5)
    admin = client(app, key)
    assert [admin.get("/health").status_code for _ in range(5)] == [200] * 5
    for path in ("/health", "/openapi.json", "/auth/login"):
        response = admin.get(path)
        assert response.status_code == 429, path
        assert response.headers["retry-after"] == "2"
        assert response.json() == {"error": "too many requests from testclient: try again in 2 s",
                                   "retry_after_seconds": 2}


def test_rate_is_per_address_over_a_real_socket(tmp_path: Path) -> None:
    app, _, key = make_app(tmp_path, rate_per_second=1, rate_burst=3)
    with live_server(app) as url, httpx.Client(base_url=url, headers=bearer(key), timeout=5) as local:
        statuses = [local.get("/health").status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]


def test_buckets_refill_at_the_rate() -> None:
    clock = Clock(100.0)
    buckets = Buckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == 0.5
    assert buckets.take("b") == 0.0, "another key has its own bucket"
    clock.now += 0.5
    assert buckets.wait("a") == 0.0 and buckets.take("a") == 0.0
    clock.now += 100
    assert [buckets.take("a") for _ in range(4)] == [0.0, 0.0, 0.0, 0.5], "never more than the burst"


def test_buckets_forget_the_oldest_keys_first() -> None:
    buckets = Buckets(rate=1.0, burst=1, clock=Clock(), max_keys=2)
    buckets.take("a")
    buckets.take("b")
    buckets.take("c")  # "a" is forgotten: it starts afresh
    assert buckets.take("a") == 0.0
    assert buckets.take("c") > 0
