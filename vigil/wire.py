"""Frames on the agent channel: a 4-byte big-endian length, then one JSON object (DESIGN §1).

Both ends use one thread per connection that alone reads and writes its socket (an SSL object
must not be read and written from two threads), so reads take a short timeout and the thread
looks at its outgoing work between them. `FrameReader` keeps partial frames across timeouts.

Messages, by their "t" field:

    agent -> manager   hello      {name, version, os, modules, stream, outbox_depth}
                       batch      {stream, first, events: [envelope, ...]}   (event i has seq first+i)
                       keepalive  {outbox_depth, events_sent, dropped, modules}
                       result     {id, ok, result | error}                  (answer to a command)
    manager -> agent   welcome    {agent_id, acked, keepalive_seconds}      (acked: last seq stored)
                       ack        {seq}                                     (stored up to seq)
                       alive      {}                                        (answer to keepalive)
                       cmd        {id, op, args}
                       error      {error}                                   (then the manager closes)
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from typing import Any

import orjson

from vigil.errors import VigilError

PROTOCOL_VERSION = 1
HEADER = struct.Struct(">I")


class FrameError(VigilError):
    """The peer sent something that is not a frame of this protocol; the connection must close."""


class FrameReader:
    """Reads whole frames from a socket with a timeout; a partial frame waits for the next call."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket, max_bytes: int) -> None:
        self.sock = sock
        self.max_bytes = max_bytes
        self._buffer = bytearray()

    def _next(self) -> dict[str, Any] | None:
        if len(self._buffer) < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(self._buffer)
        if size > self.max_bytes:
            raise FrameError(f"frame of {size} bytes is over the limit of {self.max_bytes} bytes")
        end = HEADER.size + size
        if len(self._buffer) < end:
            return None
        body = bytes(self._buffer[HEADER.size:end])
        del self._buffer[:end]
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise FrameError(f"frame is not JSON ({exc})") from None
        if not isinstance(message, dict) or not isinstance(message.get("t"), str):
            raise FrameError("frame is not a JSON object with a message type 't'")
        return message

    def read(self, timeout: float) -> dict[str, Any] | None:
        """One message, or None when none completed within `timeout`. Raises EOFError when the peer left."""
        message = self._next()
        if message is not None:
            return message
        self.sock.settimeout(timeout)
        while True:
            try:
                chunk = self.sock.recv(262144)
            except (TimeoutError, ssl.SSLWantReadError):
                return None
            if not chunk:
                raise EOFError("the peer closed the connection")
            self._buffer += chunk
            message = self._next()
            if message is not None:
                return message
            if len(self._buffer) >= HEADER.size:
                (size,) = HEADER.unpack_from(self._buffer)
                if size > self.max_bytes:
                    raise FrameError(f"frame of {size} bytes is over the limit of {self.max_bytes} bytes")

    def read_within(self, timeout: float) -> dict[str, Any] | None:
        """The next message if one arrives within `timeout` seconds, else None."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.read(min(0.5, max(0.01, left)))
            if message is not None:
                return message
        return None


def frame(message: dict[str, Any]) -> bytes:
    body = orjson.dumps(message)
    return HEADER.pack(len(body)) + body


def batch_frame(stream: str, first: int, bodies: list[bytes]) -> bytes:
    """A batch built from envelopes already serialised in the outbox, without decoding them again."""
    body = b'{"t":"batch","stream":' + orjson.dumps(stream) + b',"first":' + str(first).encode() + \
        b',"events":[' + b",".join(bodies) + b"]}"
    return HEADER.pack(len(body)) + body


def send(sock: socket.socket | ssl.SSLSocket, message: dict[str, Any], timeout: float = 30.0) -> None:
    sock.settimeout(timeout)
    sock.sendall(frame(message))
