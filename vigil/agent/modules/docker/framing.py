"""Splits the engine's event stream into lines, cutting off any line past a size limit."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def frame_lines(chunks: Iterable[bytes], max_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Yield (line, full length). A line longer than max_bytes is yielded cut to max_bytes,
    with its real length, so the caller can report it instead of dropping it unseen."""
    buffer = bytearray()
    overflow = 0  # bytes of the current line discarded past the limit
    for chunk in chunks:
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            piece = chunk[start:] if newline < 0 else chunk[start:newline]
            room = max_bytes - len(buffer)
            if len(piece) > room:
                buffer += piece[: max(room, 0)]
                overflow += len(piece) - max(room, 0)
            else:
                buffer += piece
            if newline < 0:
                break
            if buffer.strip() or overflow:
                yield bytes(buffer), len(buffer) + overflow
            buffer.clear()
            overflow = 0
            start = newline + 1
    if buffer.strip() or overflow:
        yield bytes(buffer), len(buffer) + overflow
