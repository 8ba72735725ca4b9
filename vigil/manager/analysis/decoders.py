"""Decoders turn an event into named fields. Structured sources arrive as JSON already; text lines
(decoder `syslog`) go through the syslog header and the text decoders (`text_decoders.py`)."""

from __future__ import annotations

from typing import Any, Final, NamedTuple

import orjson

from vigil.errors import EventError
from vigil.event import Event
from vigil.manager.analysis.fields import Fields
from vigil.manager.analysis.text_decoders import TextDecoders

TEXT: Final = "syslog"  # an Event.decoder: a text line with (or without) a syslog header
_new: Final = tuple.__new__


class Decoded(NamedTuple):
    """One event decoded. A named tuple, built with tuple.__new__ on the text path: one per event."""

    name: str
    parent: str | None
    fields: Fields
    predecoder: dict[str, Any] | None = None  # a text line's syslog header, as Wazuh's alert shows it
    child: str | None = None  # the child decoder that matched, for logtest


def decode(event: Event, text: TextDecoders | None = None) -> Decoded:
    """Structured events keep their data; a bare JSON line (as fed to logtest) is parsed first; a text
    line is decoded, and its fields become the event's data (the alert's `data`, as in Wazuh)."""
    if event.decoder == TEXT and event.raw is not None and text is not None:
        return _decode_text(event, event.raw, text)
    data = event.data
    if not data and event.raw is not None and event.decoder == "json":
        try:
            parsed = orjson.loads(event.raw)
        except orjson.JSONDecodeError as exc:
            raise EventError(f"not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise EventError("a JSON event must be an object")
        data = parsed
        event.data = data
    return _new(Decoded, (event.decoder, None, Fields(data, event.raw), None, None))


def _decode_text(event: Event, raw: str, text: TextDecoders) -> Decoded:
    if raw.startswith("{"):  # a JSON line (an application's JSON log, Wazuh's integrations): its own fields
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            # What the collector knew (container, pod, a cut line) stays, and wins over the line's own keys.
            data = {**parsed, **event.data} if event.data else parsed
            event.data = data
            return Decoded(name="json", parent=None, fields=Fields(data, raw))
    line = text.decode(raw)
    # What the collector knew of the source (container, pod, cut line) stays beside the decoded fields.
    event.data = {**event.data, **line.fields} if event.data else line.fields
    predecoder = line.header.fields() or None
    # Rules see the header's parts (program_name, hostname, ...) beside the decoded fields.
    fields = Fields({**(predecoder or {}), **event.data}, raw)
    name = line.name or TEXT
    return _new(Decoded, (name, line.name if line.child else None, fields, predecoder, line.child))
