"""The agent's syslog receiver on real sockets (127.0.0.1, free ports): what senders send arrives as events,
floods are counted and alerted, hostile input is cut or passed through, and the receiver stays up."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from typing import Any

import pytest

from vigil.agent.modules.logs.syslog_receiver import SyslogReceiver
from vigil.config import SyslogReceiverConfig
from vigil.errors import ListenError
from vigil.event import AgentRef, Event

from ..unit.support import analyzer

LOCAL = "127.0.0.1"
AGENT = AgentRef("001", "node1", "10.0.0.1")
RFC3164 = b"<38>Nov 27 07:30:00 web1 sshd[123]: Failed password for root from 203.0.113.9 port 5 ssh2"
RFC5424 = b"<38>1 2026-11-27T07:30:00.123Z web1 sshd 123 ID47 [meta seq=\"1\"] Accepted publickey for deploy"


class Collector:
    """The sink: keeps every event it is given, optionally taking its time like a durable commit."""

    def __init__(self, delay: float = 0.0, fail_first: int = 0) -> None:
        self.delay = delay
        self.fail_first = fail_first
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def __call__(self, events: list[Event], state: dict[str, Any] | None) -> None:
        assert state is None
        time.sleep(self.delay)
        with self.lock:
            if self.fail_first:
                self.fail_first -= 1
                raise OSError("disk full")
            self.events.extend(events)

    def messages(self) -> list[Event]:
        with self.lock:
            return [e for e in self.events if e.module == "logs"]

    def losses(self) -> list[Event]:
        with self.lock:
            return [e for e in self.events if e.module == "vigil"]

    def raws(self) -> list[str | None]:
        return [e.raw for e in self.messages()]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Event]:
        wait_until(lambda: len(self.messages()) >= count, timeout, lambda: f"{len(self.messages())} events")
        return self.messages()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, state: Callable[[], Any] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {state()}")
        time.sleep(0.01)


class Running:
    """A receiver running in its own thread, as the Supervisor runs it."""

    def __init__(self, receiver: SyslogReceiver) -> None:
        self.receiver = receiver
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-syslog")

    def _run(self) -> None:
        try:
            self.receiver.run(self.stop)
        except BaseException as exc:
            self.error = exc

    def start(self) -> None:
        self.stop.clear()
        self.error = None
        self.thread = threading.Thread(target=self._run, name="test-syslog")
        self.thread.start()
        wait_until(lambda: self.receiver.status()["listening"] or not self.thread.is_alive())
        if self.error is not None:
            raise self.error

    def halt(self) -> float:
        """Stops the receiver as the Supervisor does; returns how long it took."""
        started = time.monotonic()
        self.stop.set()
        self.receiver.interrupt()
        self.thread.join(10)
        assert not self.thread.is_alive(), "run() did not return"
        return time.monotonic() - started

    def status(self) -> dict[str, Any]:
        return self.receiver.status()

    def udp(self, *messages: bytes) -> None:
        with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as sock:
            for message in messages:
                sock.sendto(message, (LOCAL, self.status()["udp_port"]))

    def tcp(self) -> socket.socket:
        sock = socket.create_connection((LOCAL, self.status()["tcp_port"]), timeout=10)
        return sock


@contextmanager
def receiving(sink: Collector, limit: int = 4096, **options: Any) -> Iterator[Running]:
    config = SyslogReceiverConfig(enabled=True, **{"udp_port": 0, "tcp_port": 0, **options})
    running = Running(SyslogReceiver(config, AGENT, sink, limit))
    running.start()
    try:
        yield running
    finally:
        running.halt()
    assert running.error is None, running.error


def counted(message: bytes) -> bytes:
    return b"%d %s" % (len(message), message)


def test_rfc3164_and_rfc5424_over_udp_arrive_as_sent() -> None:
    sink = Collector()
    with receiving(sink) as rx:
        rx.udp(RFC3164 + b"\n", RFC5424)
        events = sink.wait_for(2)
    assert [e.raw for e in events] == [RFC3164.decode(), RFC5424.decode()]
    for event in events:
        assert event.location == "syslog:udp:127.0.0.1"
        assert event.decoder == "syslog" and event.module == "logs" and event.agent == AGENT
        assert event.data == {}
        assert abs(event.timestamp - time.time()) < 10


def test_both_framings_over_one_tcp_connection() -> None:
    sink = Collector()
    with receiving(sink) as rx, closing(rx.tcp()) as conn:
        conn.sendall(counted(RFC5424) + RFC3164 + b"\n" + counted(RFC3164) + RFC5424 + b"\r\n")
        events = sink.wait_for(4)
        assert rx.status()["clients"] == 1
    assert [e.raw for e in events] == [m.decode() for m in (RFC5424, RFC3164, RFC3164, RFC5424)]
    assert {e.location for e in events} == {"syslog:tcp:127.0.0.1"}
    assert rx.status()["clients"] == 0


def test_message_split_across_tcp_writes() -> None:
    sink = Collector()
    with receiving(sink) as rx, closing(rx.tcp()) as conn:
        stream = counted(RFC5424) + RFC3164 + b"\n"
        for i in range(0, len(stream), 7):
            conn.sendall(stream[i:i + 7])
            time.sleep(0.001)
        assert sink.raws() == [] or sink.raws()[0] == RFC5424.decode()
        assert [e.raw for e in sink.wait_for(2)] == [RFC5424.decode(), RFC3164.decode()]


def test_sshd_failed_password_over_udp_raises_the_sshd_alert() -> None:
    sink = Collector()
    with receiving(sink) as rx:
        rx.udp(RFC3164)
        [event] = sink.wait_for(1)
    alert = analyzer().analyse(event).alert
    assert alert is not None
    assert alert["rule"]["id"] in {"5716", "5760"}
    assert alert["full_log"] == RFC3164.decode()
    assert alert["location"] == "syslog:udp:127.0.0.1"
    assert alert["agent"] == {"id": "001", "name": "node1", "ip": "10.0.0.1"}
    assert alert["data"]["srcip"] == "203.0.113.9"
    assert alert["predecoder"]["program_name"] == "sshd"


def test_a_flood_bigger_than_the_queue_is_counted_and_alerted() -> None:
    sink = Collector(delay=0.05)  # a slow disk: 20 commits a second
    sent = 3000
    with receiving(sink, queue_messages=10) as rx:
        rx.udp(*(b"<13>Nov 27 07:30:00 web1 flood: message %d" % i for i in range(sent)))
        # the kernel's drops are seen with the next datagram, so send markers until one is stored
        markers = 0
        deadline = time.monotonic() + 30
        while not any(r and r.endswith("marker") for r in sink.raws()):
            assert time.monotonic() < deadline, rx.status()
            if rx.status()["queued"] == 0:
                rx.udp(b"<13>Nov 27 07:30:01 web1 flood: marker")
                markers += 1
            time.sleep(0.2)
        wait_until(lambda: rx.status()["dropped_reported"] == rx.status()["dropped"], 10, rx.status)
        status = rx.status()
    assert status["dropped"] > 0
    assert status["received"] == status["stored"] + status["dropped"]
    assert status["received"] + status["udp_kernel_dropped"] == sent + markers  # nothing lost unseen
    assert len(sink.messages()) == status["stored"]
    queue_losses = [e for e in sink.losses() if "queue was full" in e.data["vigil"]["error"]]
    assert sum(e.data["vigil"]["count"] for e in queue_losses) == status["dropped"]
    loss = queue_losses[0]
    assert loss.decoder == "vigil" and loss.agent == AGENT
    assert loss.data["vigil"]["module"] == "syslog" and loss.data["vigil"]["kind"] == "events_dropped"
    alert = analyzer().analyse(loss).alert
    assert alert is not None and alert["rule"]["id"] == "200003"
    assert alert["rule"]["description"] == (
        f"Vigil: {loss.data['vigil']['count']} events dropped by the syslog module: the syslog receiver queue was "
        "full (10 messages): messages arrived faster than they could be stored")
    kernel_losses = [e for e in sink.losses() if "kernel" in e.data["vigil"]["error"]]
    assert sum(e.data["vigil"]["count"] for e in kernel_losses) == status["udp_kernel_dropped"]


def test_a_tcp_sender_faster_than_the_disk_is_slowed_down_and_loses_nothing() -> None:
    sink = Collector(delay=0.02)  # a slow disk: 50 commits a second
    sent = 5000
    with receiving(sink, queue_messages=10) as rx:
        with closing(rx.tcp()) as sock:
            sock.sendall(b"".join(counted(b"<13>Nov 27 07:30:00 web1 app: message %d" % i) for i in range(sent)))
            sink.wait_for(sent, timeout=60)
        status = rx.status()
    assert status["tcp_paused"] > 0 and status["dropped"] == 0 and sink.losses() == []
    raws = [r for r in sink.raws() if r and "app: message" in r]
    assert raws == [f"<13>Nov 27 07:30:00 web1 app: message {i}" for i in range(sent)]  # all, once, in order


def test_a_flood_from_another_process_is_accounted_for_to_the_last_datagram() -> None:
    """Faster than Python reads: the kernel drops datagrams too, and those are counted (SO_RXQ_OVFL) and
    reported as well; every datagram sent is either received or counted as dropped by the kernel."""
    sink = Collector(delay=0.01)
    sent = 200_000
    with receiving(sink, queue_messages=1000, tcp_port=None) as rx:
        sender = (f"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                  f"m = b'<13>Nov 27 07:30:00 web1 app: ' + b'x' * 900\n"
                  f"for _ in range({sent}): s.sendto(m, ('{LOCAL}', {rx.status()['udp_port']}))\n")
        subprocess.run([sys.executable, "-c", sender], check=True, timeout=120)
        markers = 0
        deadline = time.monotonic() + 60
        while not any(r and r.endswith("marker") for r in sink.raws()):
            assert time.monotonic() < deadline, rx.status()
            if rx.status()["queued"] == 0:
                rx.udp(b"<13>Nov 27 07:30:01 web1 app: marker")
                markers += 1
            time.sleep(0.2)
        status = rx.status()

        def reported() -> int:
            return sum(e.data["vigil"]["count"] for e in sink.losses())

        wait_until(lambda: reported() == status["dropped"] + status["udp_kernel_dropped"], 10, reported)
    assert status["received"] + status["udp_kernel_dropped"] == sent + markers
    assert status["received"] == status["stored"] + status["dropped"]


def test_too_many_tcp_clients_are_refused_and_counted() -> None:
    sink = Collector()
    with receiving(sink, max_tcp_clients=2) as rx, ExitStack() as stack:
        first, second = (stack.enter_context(closing(rx.tcp())) for _ in range(2))
        wait_until(lambda: rx.status()["clients"] == 2, state=rx.status)
        third = stack.enter_context(closing(rx.tcp()))
        wait_until(lambda: rx.status()["tcp_refused"] == 1, state=rx.status)
        assert third.recv(100) == b""  # closed on it
        first.sendall(b"<13>one\n")
        second.sendall(b"<13>two\n")
        assert sorted(e.raw or "" for e in sink.wait_for(2)) == ["<13>one", "<13>two"]
        first.close()
        wait_until(lambda: rx.status()["clients"] == 1, state=rx.status)
        fourth = stack.enter_context(closing(rx.tcp()))
        fourth.sendall(b"<13>four\n")
        sink.wait_for(3)
        status = rx.status()
    assert status["tcp_refused"] == 1 and status["tcp_connections"] == 3


def test_a_10mb_tcp_line_is_cut_and_marked_and_the_connection_goes_on() -> None:
    sink = Collector()
    huge = b"<13>Nov 27 07:30:00 web1 app: " + b"A" * (10 * 1024 * 1024)
    with receiving(sink, limit=4096) as rx, closing(rx.tcp()) as conn:
        conn.sendall(huge + b"\n<13>after\n" + counted(huge) + counted(b"<13>counted after"))
        events = sink.wait_for(4, timeout=30)
        conn.sendall(b"<13>still open\n")
        events = sink.wait_for(5)
        status = rx.status()
    cut = f" [vigil: line cut at 4096 bytes of {len(huge)}]"
    assert [e.raw for e in events] == [huge[:4096].decode() + cut, "<13>after", huge[:4096].decode() + cut,
                                       "<13>counted after", "<13>still open"]
    assert events[0].data == {"log": {"truncated": True, "original_bytes": len(huge)}}
    assert status["truncated"] == 2 and status["tcp_connections"] == 1


def test_a_long_datagram_is_cut_and_marked() -> None:
    sink = Collector()
    with receiving(sink, limit=1000) as rx:
        rx.udp(b"<13>" + "é".encode() * 30_000)
        [event] = sink.wait_for(1)
    assert event.raw == "<13>" + "é" * 498 + " [vigil: line cut at 1000 bytes of 60004]"
    assert event.data == {"log": {"truncated": True, "original_bytes": 60004}}


def test_invalid_utf8_and_nul_bytes_arrive_replaced_and_marked() -> None:
    sink = Collector()
    with receiving(sink) as rx, closing(rx.tcp()) as conn:
        rx.udp(b"<13>app: bad \xff\xfe here \x00 nul\n")
        sink.wait_for(1)
        conn.sendall(counted(b"<13>app: counted \x00 nul \xc3"))
        events = sink.wait_for(2)
    assert [e.raw for e in events] == ["<13>app: bad \ufffd\ufffd here \ufffd nul",
                                       "<13>app: counted \ufffd nul \ufffd"]
    assert all(e.data == {"log": {"invalid_bytes": True}} for e in events)


def test_truncated_and_garbage_headers_arrive_as_text() -> None:
    sink = Collector()
    garbage = [b"<13>Jan  1 00:", b"<999>", b"<13>1 2026-", b"no header at all", b"<"]
    with receiving(sink) as rx, closing(rx.tcp()) as conn:
        rx.udp(*garbage)
        sink.wait_for(len(garbage))
        conn.sendall(b"<13>Jan  1 00:\n" + counted(b"<13>1 -"))
        events = sink.wait_for(len(garbage) + 2)
    assert sorted(e.raw or "" for e in events[:len(garbage)]) == sorted(g.decode() for g in garbage)
    assert [e.raw for e in events[len(garbage):]] == ["<13>Jan  1 00:", "<13>1 -"]
    checker = analyzer()
    for event in events:
        checker.analyse(event)  # the manager's decoder takes them without failing


def test_a_stalled_tcp_client_does_not_hold_up_udp_or_others() -> None:
    sink = Collector()
    with receiving(sink) as rx, closing(rx.tcp()) as stalled, closing(rx.tcp()) as other:
        stalled.sendall(b"500 <13>half a message")  # and then nothing
        rx.udp(b"<13>by udp")
        other.sendall(b"<13>by tcp\n")
        assert sorted(e.raw or "" for e in sink.wait_for(2)) == ["<13>by tcp", "<13>by udp"]
    # at stop, what the stalled client had sent is kept
    assert sink.wait_for(3)[-1].raw == "<13>half a message"


def test_interrupt_with_clients_connected_returns_promptly() -> None:
    sink = Collector()
    with ExitStack() as stack:
        rx = Running(SyslogReceiver(SyslogReceiverConfig(enabled=True, udp_port=0, tcp_port=0), AGENT, sink, 4096))
        rx.start()
        clients = [stack.enter_context(closing(rx.tcp())) for _ in range(5)]
        wait_until(lambda: rx.status()["clients"] == 5, state=rx.status)
        clients[0].sendall(b"<13>unfinished")
        time.sleep(0.1)
        assert rx.halt() < 2.0
        assert rx.error is None
        for client in clients:
            assert client.recv(10) == b""
    assert sink.raws() == ["<13>unfinished"]
    assert rx.status()["clients"] == 0 and not rx.status()["listening"]


def test_run_twice_in_a_row() -> None:
    sink = Collector()
    config = SyslogReceiverConfig(enabled=True, udp_port=0, tcp_port=0)
    rx = Running(SyslogReceiver(config, AGENT, sink, 4096))
    for round_ in range(2):
        rx.start()
        try:
            rx.udp(b"<13>udp %d" % round_)
            with closing(rx.tcp()) as conn:
                conn.sendall(b"<13>tcp %d\n" % round_)
                sink.wait_for(2 * round_ + 2)
        finally:
            rx.halt()
        assert rx.error is None
    assert sorted(sink.raws(), key=str) == ["<13>tcp 0", "<13>tcp 1", "<13>udp 0", "<13>udp 1"]
    assert rx.status()["received"] == rx.status()["stored"] == 4


def test_same_fixed_ports_again_after_a_stop() -> None:
    with closing(socket.socket()) as probe:
        probe.bind((LOCAL, 0))
        port = probe.getsockname()[1]
    sink = Collector()
    rx = Running(SyslogReceiver(SyslogReceiverConfig(enabled=True, udp_port=port, tcp_port=port), AGENT, sink, 4096))
    for _ in range(2):
        rx.start()
        try:
            with closing(rx.tcp()) as conn:
                conn.sendall(b"<13>x\n")
                sink.wait_for(len(sink.messages()) + 1)
            assert rx.status()["udp_port"] == rx.status()["tcp_port"] == port
        finally:
            rx.halt()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_port_in_use_is_a_clear_error(transport: str) -> None:
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with closing(socket.socket(socket.AF_INET, kind)) as taken:
        taken.bind((LOCAL, 0))
        port = taken.getsockname()[1]
        options = {"udp_port": port, "tcp_port": None} if transport == "udp" else {"udp_port": None, "tcp_port": port}
        rx = SyslogReceiver(SyslogReceiverConfig(enabled=True, **options), AGENT, Collector(), 4096)
        with pytest.raises(ListenError, match=rf"cannot listen on {transport} 127\.0\.0\.1:{port}: .*in use"):
            rx.run(threading.Event())
    assert rx.status()["last_error"] and not rx.status()["listening"]


def test_a_failing_sink_ends_the_run_and_the_loss_is_reported_next_time() -> None:
    sink = Collector(fail_first=1)
    config = SyslogReceiverConfig(enabled=True, udp_port=0, tcp_port=None)
    rx = Running(SyslogReceiver(config, AGENT, sink, 4096))
    rx.start()
    rx.udp(b"<13>lost")
    rx.thread.join(10)
    assert isinstance(rx.error, OSError) and "disk full" in str(rx.error)
    assert rx.status()["store_failed"] == 1
    rx.start()  # as the Supervisor restarts it
    try:
        rx.udp(b"<13>kept")
        sink.wait_for(1)
        wait_until(lambda: bool(sink.losses()))
    finally:
        rx.halt()
    [loss] = sink.losses()
    assert loss.data["vigil"]["count"] == 1
    assert loss.data["vigil"]["error"] == "storing received syslog messages failed: disk full"
    assert sink.raws() == ["<13>kept"]
