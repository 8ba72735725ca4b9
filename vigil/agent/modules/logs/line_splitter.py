"""Cuts a byte stream into lines without ever holding more than the line limit of one line (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Line:
    data: bytes  # at most the limit; the line's end (`\n`, `\r\n`) is not part of it
    size: int  # the line's whole length, when it was longer than the limit
    end: int  # the stream offset just past the line's newline: where a resumed reader starts
    start: int  # the stream offset of the line's first byte

    @property
    def cut(self) -> bool:
        return self.size > len(self.data)


class HeadKeeper:
    """The first `limit` bytes of something that arrives in pieces, and its whole length: all a reader
    holds of a long line (here, in the syslog framer and in the container-log joiner)."""

    __slots__ = ("head", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head = bytearray()
        self.size = 0

    def add(self, data: bytes | bytearray, start: int = 0, stop: int | None = None) -> None:
        stop = len(data) if stop is None else stop
        room = self.limit - len(self.head)
        if room > 0:
            self.head += data[start:min(stop, start + room)]
        self.size += stop - start

    def take(self) -> tuple[bytes, int]:
        """What was kept and the whole length; empty again afterwards."""
        kept = bytes(self.head), self.size
        self.head.clear()
        self.size = 0
        return kept


class LineSplitter:
    """Fed chunks as they are read; gives whole lines, keeping the first `limit` bytes of a long one.

    `offset` is the stream position of the next byte fed; `pending` is how many bytes of an
    unfinished line are held (they are read again after a restart, since no line was given yet)."""

    def __init__(self, limit: int, offset: int = 0) -> None:
        self.limit = limit
        self.offset = offset
        self._held = HeadKeeper(limit)  # the unfinished line
        self._start = offset  # where the unfinished line began

    @property
    def pending(self) -> int:
        return self._held.size

    def feed(self, chunk: bytes) -> list[Line]:
        lines: list[Line] = []
        start = 0
        base = self.offset
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                self._held.add(chunk, start)
                break
            if self._held.size:
                self._held.add(chunk, start, newline)
                data, size = self._held.take()
            else:
                size = newline - start
                data = chunk[start:min(newline, start + self.limit)]
            if size == len(data) and data.endswith(b"\r"):
                data, size = data[:-1], size - 1
            lines.append(Line(data, size, base + newline + 1, self._start))
            start = newline + 1
            self._start = base + start
        self.offset = base + len(chunk)
        return lines

    def flush(self) -> Line | None:
        """The unfinished line, given as it is (the file went away, or was cut short)."""
        if not self._held.size:
            return None
        line = Line(*self._held.take(), self.offset, self._start)
        self._start = self.offset
        return line

    def reset(self, offset: int) -> None:
        self._held.take()
        self.offset = offset
        self._start = offset
