"""One collected log line as an event: cut when too long, made valid text, marked when changed (pure)."""

from __future__ import annotations

from typing import Any

from vigil.event import AgentRef, Event

TEXT_DECODER = "syslog"  # the manager's decoder for text lines: syslog header, then the program's decoder
TRUNCATION_MARK = " [vigil: line cut at {limit} bytes of {size}]"


def as_text(raw: bytes, limit: int, size: int | None = None) -> tuple[str, dict[str, Any] | None]:
    """The line as text and what was done to it, if anything (`log.truncated`, `log.invalid_bytes`).

    `size` is the line's whole length when the reader kept only its start. Invalid UTF-8 becomes
    U+FFFD and so do NUL bytes, which some consumers of alerts.json stop at."""
    notes: dict[str, Any] | None = None
    size = max(size or 0, len(raw))
    if size > limit or size > len(raw):
        raw = raw[:limit]
        notes = {"truncated": True, "original_bytes": size}
    try:
        text = _decode_cut(raw) if notes else raw.decode()
    except UnicodeDecodeError:
        text = raw.decode(errors="replace")
        notes = {**(notes or {}), "invalid_bytes": True}
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
        notes = {**(notes or {}), "invalid_bytes": True}
    if notes and notes.get("truncated"):
        text += TRUNCATION_MARK.format(limit=limit, size=size)
    return text, notes


def line_event(raw: bytes, location: str, agent: AgentRef, limit: int, timestamp: float,
               meta: dict[str, Any] | None = None, size: int | None = None) -> Event:
    """`meta` holds what is known of the source (container, pod); the decoded fields are added to it."""
    text, notes = as_text(raw, limit, size)
    data: dict[str, Any] = dict(meta) if meta else {}
    if notes:
        data["log"] = {**data.get("log", {}), **notes}
    return Event(module="logs", location=location, timestamp=timestamp, data=data, decoder=TEXT_DECODER,
                 agent=agent, raw=text)


def _decode_cut(raw: bytes) -> str:
    """A line cut at the limit may end inside a character: that part goes, and is not bad input."""
    for drop in range(4):
        try:
            return raw[:len(raw) - drop].decode()
        except UnicodeDecodeError as exc:
            if exc.start < len(raw) - 3:
                raise
    return raw.decode()
