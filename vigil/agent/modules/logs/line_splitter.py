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


class LineSplitter:
    """Fed chunks as they are read; gives whole lines, keeping the first `limit` bytes of a long one.

    `offset` is the stream position of the next byte fed; `pending` is how many bytes of an
    unfinished line are held (they are read again after a restart, since no line was given yet)."""

    def __init__(self, limit: int, offset: int = 0) -> None:
        self.limit = limit
        self.offset = offset
        self._head = bytearray()  # the unfinished line's first bytes, up to the limit
        self._size = 0  # the unfinished line's length so far
        self._start = offset  # where the unfinished line began

    @property
    def pending(self) -> int:
        return self._size

    def feed(self, chunk: bytes) -> list[Line]:
        lines: list[Line] = []
        start = 0
        base = self.offset
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                self._hold(chunk, start, len(chunk))
                break
            if self._size:
                self._hold(chunk, start, newline)
                data, size = bytes(self._head), self._size
                self._head.clear()
                self._size = 0
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

    def _hold(self, chunk: bytes, start: int, stop: int) -> None:
        room = self.limit - len(self._head)
        if room > 0:
            self._head += chunk[start:min(stop, start + room)]
        self._size += stop - start

    def flush(self) -> Line | None:
        """The unfinished line, given as it is (the file went away, or was cut short)."""
        if not self._size:
            return None
        line = Line(bytes(self._head), self._size, self.offset, self._start)
        self._head.clear()
        self._size = 0
        self._start = self.offset
        return line

    def reset(self, offset: int) -> None:
        self._head.clear()
        self._size = 0
        self.offset = offset
        self._start = offset
