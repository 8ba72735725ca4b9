"""Cuts syslog transport bytes into messages: TCP streams (RFC 6587) and UDP datagrams (pure, no sockets).

A TCP message is either octet-counted (`<length> <message>`) or non-transparent (ended by LF, CRLF or
NUL); the mode is decided again at the start of every message, as rsyslog does, so one connection may
mix them. The syslog header is not read here: the manager's decoder reads it from the message as sent.
Whatever the input, a framer holds at most `limit` bytes of one message: longer messages keep their
first `limit` bytes and their real size, so they can be cut and marked instead of dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vigil.agent.modules.logs.line_splitter import HeadKeeper

# A count longer than this is not a count (10 digits already exceed the hard cap below).
MAX_COUNT_DIGITS = 10
# A larger octet count is taken for text that happens to start with digits, not for a length: a sender
# that really frames 64 MiB messages is broken, and trusting a bogus count would swallow the stream.
MAX_OCTET_COUNT = 64 * 1024 * 1024

_TERMINATOR = re.compile(b"[\n\x00]")
_DIGITS = frozenset(b"0123456789")
_SPACE = 0x20
_CR = 0x0D

# Reader states, at the start of a message, in its octet count, in its counted octets, in a line.
_START, _COUNT, _OCTETS, _LINE = range(4)


@dataclass(frozen=True, slots=True)
class Message:
    data: bytes  # the message without its framing; at most the framer's limit
    size: int  # the message's whole length as sent

    @property
    def cut(self) -> bool:
        return self.size > len(self.data)


def datagram_message(datagram: bytes, limit: int) -> Message | None:
    """One UDP datagram is one message; senders often end it with a newline (or NUL), which is framing."""
    data = datagram.rstrip(b"\r\n\x00")
    if not data:
        return None
    return Message(data[:limit], len(data))


class StreamFramer:
    """Fed the chunks of one TCP connection as they arrive; gives the whole messages found so far.

    `framing_errors` counts octet counts that cannot be one (zero, over `max_count`, too many digits):
    like any digits at a message's start not followed by a space, they are read as the start of a line,
    so nothing is lost and a bogus count never swallows the stream."""

    def __init__(self, limit: int, max_count: int = MAX_OCTET_COUNT) -> None:
        self.limit = limit
        self.max_count = max_count
        self.framing_errors = 0
        self._state = _START
        self._held = HeadKeeper(limit)  # the current message
        self._count = bytearray()  # the octet count's digits read so far
        self._remaining = 0  # octets of a counted message still to come
        self._last = 0  # the current message's last byte so far (a CR before LF is framing)

    @property
    def pending(self) -> int:
        """Bytes of an unfinished message held (at most the limit, plus a few count digits)."""
        return len(self._held.head) + len(self._count)

    def feed(self, chunk: bytes) -> list[Message]:
        messages: list[Message] = []
        pos, end = 0, len(chunk)
        while pos < end:
            state = self._state
            if state == _START:
                byte = chunk[pos]
                if byte in _DIGITS:
                    self._state = _COUNT
                elif byte in b"\n\x00":  # an empty line: nothing to give
                    pos += 1
                else:
                    self._state = _LINE
            elif state == _COUNT:
                pos = self._read_count(chunk, pos)
            elif state == _OCTETS:
                take = min(self._remaining, end - pos)
                self._hold(chunk, pos, pos + take)
                self._remaining -= take
                pos += take
                if not self._remaining:
                    messages.append(self._finish())
            else:
                found = _TERMINATOR.search(chunk, pos)
                stop = found.start() if found else end
                self._hold(chunk, pos, stop)
                if found is None:
                    break
                pos = stop + 1
                message = self._finish(strip_cr=True)
                if message.size:  # a line that was only CR
                    messages.append(message)
        return messages

    def flush(self) -> Message | None:
        """At the end of the stream: the unfinished message as it is (the sender stopped mid-message)."""
        if self._state == _COUNT:
            self._hold(self._count, 0, len(self._count))
            self._count.clear()
            self._state = _LINE
        message = self._finish(strip_cr=self._state == _LINE)
        return message if message.size else None

    def _read_count(self, chunk: bytes, pos: int) -> int:
        """Reads count digits from `pos`; returns where reading goes on (in the same or another state)."""
        end = len(chunk)
        while pos < end and chunk[pos] in _DIGITS and len(self._count) <= MAX_COUNT_DIGITS:
            self._count.append(chunk[pos])
            pos += 1
        if pos == end:
            return pos
        digits = bytes(self._count)
        self._count.clear()
        count = int(digits) if len(digits) <= MAX_COUNT_DIGITS else 0
        if chunk[pos] == _SPACE and 0 < count <= self.max_count:
            self._state, self._remaining = _OCTETS, count
            return pos + 1
        if chunk[pos] == _SPACE or len(digits) > MAX_COUNT_DIGITS:
            self.framing_errors += 1  # a count that cannot be one; a line merely starting with digits is not
        # The digits begin a line (rsyslog does the same after its framing error).
        self._state = _LINE
        self._hold(digits, 0, len(digits))
        return pos

    def _hold(self, data: bytes | bytearray, start: int, stop: int) -> None:
        if stop > start:
            self._held.add(data, start, stop)
            self._last = data[stop - 1]

    def _finish(self, strip_cr: bool = False) -> Message:
        data, size = self._held.take()
        if strip_cr and size and self._last == _CR:
            size -= 1
            data = data[:size]
        self._state = _START
        return Message(data, size)
