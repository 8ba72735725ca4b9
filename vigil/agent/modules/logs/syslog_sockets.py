"""The syslog receiver's sockets: binding with clear errors, the TCP clients, one run's selector."""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
from collections import deque

from vigil.agent.modules.logs.syslog_framing import Message, StreamFramer
from vigil.errors import ListenError

UDP_BUFFER_BYTES = 4 * 1024 * 1024  # asked for; the kernel caps it at net.core.rmem_max
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)  # Linux: each datagram carries its socket's drop count


class Client:
    """One TCP sender. While the queue is full its messages wait in `held` and it is not read
    (`paused`): TCP then slows the sender down instead of Vigil dropping what it sent."""

    __slots__ = ("framer", "held", "location", "paused", "sock")

    def __init__(self, sock: socket.socket, peer_ip: str, limit: int) -> None:
        self.sock = sock
        self.location = f"syslog:tcp:{peer_ip}"
        self.framer = StreamFramer(limit)
        self.held: deque[Message] = deque()
        self.paused = False


class Sockets:
    """What one run listens on; everything here is closed when the run ends."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.wake_read, self.wake_write = socket.socketpair()
        self.wake_read.setblocking(False)
        self.wake_write.setblocking(False)
        self.selector.register(self.wake_read, selectors.EVENT_READ, self._drain_wake)
        self.listeners: list[socket.socket] = []
        self.clients: dict[socket.socket, Client] = {}
        self.udp_overflows = 0  # the kernel's drop count last seen on the UDP socket

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            self.wake_read.recv(4096)

    def close(self) -> None:
        for sock in [*self.clients, *self.listeners, self.wake_read, self.wake_write]:
            sock.close()
        self.selector.close()


def bind(host: str, transport: str, port: int) -> socket.socket:
    """A non-blocking listening socket; ListenError names the address and what to do."""
    where = f"{transport} {'[' + host + ']' if ':' in host else host}:{port}"
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=kind)[0]
        sock = socket.socket(family, kind)
    except OSError as exc:
        raise ListenError(f"the syslog receiver cannot listen on {where}: {exc}") from exc
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart must not wait for TIME_WAIT
        else:
            for option, value in ((socket.SO_RCVBUF, UDP_BUFFER_BYTES), (SO_RXQ_OVFL, 1)):
                with contextlib.suppress(OSError):  # best effort: a smaller buffer, or drops seen only as gaps
                    sock.setsockopt(socket.SOL_SOCKET, option, value)
        sock.bind(address)
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(f"the syslog receiver cannot listen on {where}: {exc}{_hint(exc)}") from exc
    return sock


def _hint(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return " (another syslog daemon may hold the port; set logs.syslog.udp_port/tcp_port, or null to turn it off)"
    if exc.errno == errno.EACCES:
        return " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return " (no interface has this address; see logs.syslog.host)"
    return ""
