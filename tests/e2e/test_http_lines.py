"""The agent's HTTP log receiver on a real socket (127.0.0.1, a free port): pods' lines become events that
the web rules alert on and that name the pod; bad requests get clear answers and the receiver stays up;
a full queue or a failed store tells the sender to retry, so nothing is lost or stored twice."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import orjson
import pytest

from vigil.agent.modules.logs.http_lines import HttpLinesReceiver
from vigil.config_kubernetes import HttpLogsConfig
from vigil.event import AgentRef, Event

from ..unit.support import analyzer
from .test_syslog_receiver import wait_until

LOCAL = "127.0.0.1"
AGENT = AgentRef("003", "node-b", "10.0.0.2")
POD_HEADERS = {"X-Vigil-Pod": "shop-7d4b9c-x2x", "X-Vigil-Namespace": "shop", "X-Vigil-Container": "nginx"}
NDJSON = {"Content-Type": "application/x-ndjson"}


def access(url: str, status: int = 200, agent: str = "Mozilla/5.0") -> str:
    return f'198.51.100.7 - - [01/Mar/2026:10:00:00 +0000] "GET {url} HTTP/1.1" {status} 512 "-" "{agent}"'


ATTACKS = [
    (access("/item.php?id=1%20UNION%20SELECT%20user,password%20FROM%20users"), "31106"),
    (access("/download?file=../../../../etc/passwd", 400), "31104"),
    (access("/cgi-bin/status", 400, agent="() { :; }; /bin/bash -c 'cat /etc/passwd'"), "200200"),
    (access("/", 403, agent="sqlmap/1.7.2#stable (https://sqlmap.org)"), "31508"),
]


class Sink:
    """Keeps what it is given; can be held (a slow disk) or fail (a full one)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.events: list[Event] = []
        self.calls = 0
        self.fail_first = fail_first
        self.open = threading.Event()
        self.open.set()
        self.lock = threading.Lock()

    def __call__(self, events: list[Event], state: dict[str, Any] | None) -> None:
        assert state is None
        self.open.wait(30)
        with self.lock:
            self.calls += 1
            if self.fail_first:
                self.fail_first -= 1
                raise OSError("disk full")
            self.events.extend(events)


class Running:
    def __init__(self, receiver: HttpLinesReceiver) -> None:
        self.receiver = receiver
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.stop.clear()
        self.error = None
        self.thread = threading.Thread(target=self._run, name="test-http-logs")
        self.thread.start()
        wait_until(lambda: self.receiver.status()["listening"] or not self.thread or not self.thread.is_alive())

    def _run(self) -> None:
        try:
            self.receiver.run(self.stop)
        except BaseException as exc:
            self.error = exc

    def halt(self) -> None:
        self.stop.set()
        self.receiver.interrupt()
        assert self.thread is not None
        self.thread.join(15)
        assert not self.thread.is_alive(), "run() did not return"

    def post(self, body: bytes, headers: dict[str, str] | None = None, path: str = "/v1/logs",
             method: str = "POST") -> tuple[int, dict[str, Any], http.client.HTTPResponse]:
        conn = http.client.HTTPConnection(LOCAL, self.receiver.status()["port"], timeout=20)
        try:
            conn.request(method, path, body=body, headers={**NDJSON, **(headers or {})})
            response = conn.getresponse()
            payload = response.read()
            return response.status, orjson.loads(payload) if payload else {}, response
        finally:
            conn.close()


@contextmanager
def receiving(sink: Sink, **options: Any) -> Iterator[Running]:
    receiver = HttpLinesReceiver(HttpLogsConfig(enabled=True, host=LOCAL, port=0, **options), AGENT, sink)
    running = Running(receiver)
    running.start()
    try:
        yield running
    finally:
        if running.thread is not None and running.thread.is_alive():
            running.halt()


def test_pod_lines_raise_web_attack_alerts_that_name_the_pod() -> None:
    sink = Sink()
    with receiving(sink) as rx:
        text_body = "\n".join(line for line, _ in ATTACKS[:2]).encode()
        json_body = b"\n".join(orjson.dumps({"log": line, "stream": "stdout"}) for line, _ in ATTACKS[2:])
        assert rx.post(text_body, POD_HEADERS)[:2] == (200, {"accepted": 2, "stored": True})
        assert rx.post(json_body, POD_HEADERS)[:2] == (200, {"accepted": 2, "stored": True})
    fresh = analyzer()
    alerts = [fresh.analyse(event).alert for event in sink.events]
    assert [a["rule"]["id"] if a else None for a in alerts] == [rule for _, rule in ATTACKS]
    for alert in alerts:
        assert alert is not None
        assert alert["data"]["kubernetes"] == {"pod": "shop-7d4b9c-x2x", "namespace": "shop", "container": "nginx"}
        assert alert["location"] == "http_logs:127.0.0.1"
    assert rx.receiver.status()["stored"] == 4


def test_garbage_and_invalid_utf8_are_stored_marked_and_the_receiver_goes_on() -> None:
    sink = Sink()
    with receiving(sink) as rx:
        status, body, _ = rx.post(b"\x00\xff\xfe\x80garbage\n{\"message\": \"half\n\xc3\x28 bad utf-8")
        assert (status, body["accepted"]) == (200, 3)
        assert rx.post(access("/ok").encode())[0] == 200
    raws = [e.raw for e in sink.events]
    assert raws[0] == "\ufffd\ufffd\ufffd\ufffdgarbage" and raws[2] == "\ufffd( bad utf-8"
    assert [e.data.get("log") for e in sink.events[:3]] == [{"invalid_bytes": True}, None, {"invalid_bytes": True}]
    assert rx.receiver.status()["invalid_bytes"] == 2


def test_a_huge_body_is_refused_before_it_is_read() -> None:
    sink = Sink()
    with receiving(sink, max_body_bytes=1024 * 1024) as rx, \
            closing(socket.create_connection((LOCAL, rx.receiver.status()["port"]), timeout=10)) as sock:
        # Only the headers go out: the answer must come without the 20 MB the request announces.
        sock.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                     b"Content-Length: 20000000\r\n\r\n" + b"A" * 1000)
        answer = b""
        while chunk := sock.recv(4096):  # until the receiver closes: it must not wait for the body
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert b"the body is 20000000 bytes; at most 1048576 are taken" in answer
        assert b"Connection: close" in answer
    assert sink.events == []


@pytest.mark.parametrize(("method", "path", "headers", "code", "message"), [
    ("GET", "/v1/logs", {}, 405, "only POST /v1/logs is served"),
    ("PUT", "/v1/logs", {}, 405, "only POST /v1/logs is served"),
    ("POST", "/v2/logs", {}, 404, "no such endpoint: POST /v1/logs"),
    ("POST", "/v1/logs", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type must be one of"),
])
def test_wrong_method_path_or_type_get_a_clear_answer(method: str, path: str, headers: dict[str, str], code: int,
                                                      message: str) -> None:
    sink = Sink()
    with receiving(sink) as rx:
        status, body, response = rx.post(b"line\n", headers, path, method)
        assert status == code and body["error"].startswith(message)
        if code == 405:
            assert response.getheader("Allow") == "POST"
        assert rx.post(b"still up\n")[0] == 200
    assert [e.raw for e in sink.events] == ["still up"]


def test_too_many_lines_in_one_request_is_413() -> None:
    with receiving(Sink(), max_lines_per_request=10, queue_lines=100) as rx:
        status, body, _ = rx.post(b"x\n" * 11)
        assert (status, body["error"]) == (413, "11 lines; at most 10 per request")


def test_a_full_queue_answers_503_retry_after_and_keeps_nothing_of_that_request() -> None:
    sink = Sink()
    sink.open.clear()  # the disk is slow: nothing is stored for now
    with receiving(sink, queue_lines=100, max_lines_per_request=100, ack_timeout_seconds=0.3) as rx:
        first = rx.post(b"a\n" * 100)
        assert first[:2] == (202, {"accepted": 100, "stored": False})  # queued, stored later
        status, body, response = rx.post(b"b\n" * 5)
        assert (status, response.getheader("Retry-After")) == (503, "1")
        assert body["error"] == "the receiver is busy or stopping; send again later"
        sink.open.set()
        wait_until(lambda: rx.receiver.status()["queued"] == 0)
        assert rx.post(b"b\n" * 5)[0] == 200  # the retry
    assert [e.raw for e in sink.events] == ["a"] * 100 + ["b"] * 5
    assert rx.receiver.status()["busy"] == 1


def test_a_failed_store_is_retried_by_the_sender_not_stored_twice() -> None:
    sink = Sink(fail_first=1)
    with receiving(sink) as rx:
        status, body, _ = rx.post(access("/one").encode())
        assert (status, body["error"]) == (503, "the lines could not be stored; send again later")
        wait_until(lambda: rx.thread is not None and not rx.thread.is_alive())
        assert isinstance(rx.error, OSError)  # the Supervisor restarts the module
        assert "storing lines failed: disk full" in rx.receiver.status()["last_error"]
        rx.start()
        assert rx.post(access("/one").encode())[0] == 200
    assert [e.raw for e in sink.events] == [access("/one")]


def test_lines_answered_202_are_stored_by_the_next_run_after_a_failure() -> None:
    sink = Sink(fail_first=1)
    sink.open.clear()
    with receiving(sink, ack_timeout_seconds=0.2) as rx:
        assert rx.post(b"late line\n")[0] == 202
        sink.open.set()  # the first store fails: the unattended line must wait for the next run
        wait_until(lambda: rx.thread is not None and not rx.thread.is_alive())
        rx.start()
        wait_until(lambda: len(sink.events) == 1)
    assert [e.raw for e in sink.events] == ["late line"]


def test_connections_over_max_clients_are_closed() -> None:
    with receiving(Sink(), max_clients=2) as rx:
        port = rx.receiver.status()["port"]
        idle = [socket.create_connection((LOCAL, port), timeout=5) for _ in range(2)]
        try:
            wait_until(lambda: rx.receiver.status()["listening"])
            with closing(socket.create_connection((LOCAL, port), timeout=5)) as extra:
                assert extra.recv(100) == b""  # closed by the receiver, unanswered (nothing sent: no reset)
            wait_until(lambda: rx.receiver.status()["connections_refused"] == 1)
        finally:
            for sock in idle:
                sock.close()

        def served() -> bool:  # once the idle clients' threads have seen them go, there is room again
            try:
                return rx.post(b"after\n")[0] == 200
            except (ConnectionError, http.client.HTTPException):
                return False

        wait_until(served)
